"""The job server (asrmerge.workflow.job_server) runs a job as the job's own process would, or leaves it to it.

A toy job script does what scripts/stage.py does (ask the server first) and then records where and how it ran: its
process, whether torch was imported before it started (the server's imports), its directory, arguments, standard
input, and it writes to its standard output and error and exits with a given status. Each case is checked against
the same script run with no server. The workflow's own jobs: the micro config run with the server and (for a few
systems, every kind of model job) without it gives the same files, and every job of the first ran on the server.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asrmerge import layout
from asrmerge.workflow import job_server
from asrmerge.workflow.compare import compare_runs
from conftest import MicroRun

JOB = textwrap.dedent('''
    import json, os, sys, time
    preloaded = "torch" in sys.modules
    from asrmerge.workflow.job_server import run_on_server

    class Job:
        log = [sys.argv[1]]

    if not run_on_server(Job()):
        with open(sys.argv[1], "w") as log:
            log.write("the job's log\\n")
        behaviour = sys.argv[2]
        record = {"pid": os.getpid(), "preloaded": preloaded, "cwd": os.getcwd(), "argv": sys.argv[1:],
                  "stdin": sys.stdin.read(), "path0": sys.path[0], "name": __name__,
                  "omp": os.environ.get("OMP_NUM_THREADS")}
        with open("record.json", "w") as out:
            json.dump(record, out)
        print("to standard output")
        print("to standard error", file=sys.stderr)
        if behaviour == "sleep":
            time.sleep(60)
        if behaviour == "raise":
            raise RuntimeError("the job failed")
        sys.exit(int(behaviour))
''')


@pytest.fixture(scope="module")
def server():
    """A server started as a run starts it; JOB_ENV is then what Snakemake gives a one-thread job of the run (the
    run's environment as it started: pytest's own variables change from test to test)."""
    saved = os.environ.pop(job_server.SOCKET_VARIABLE, None)
    started = job_server.start()
    JOB_ENV.update(job_server.job_environment(os.environ))
    yield started
    job_server.stop(started)
    JOB_ENV.clear()
    if saved is not None:
        os.environ[job_server.SOCKET_VARIABLE] = saved


JOB_ENV: dict[str, str] = {}


def run_job(folder: Path, behaviour: str = "0", env: dict | None = None, stdin: str = "input lines\n",
            wait: bool = True):
    """The toy job as Snakemake's local executor starts it: `python SCRIPT`, a one-thread job's environment."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scripts" / "job.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(JOB)
    env = dict(JOB_ENV or job_server.job_environment(os.environ)) if env is None else env
    command = [sys.executable, str(script), str(folder / "job.log"), behaviour]
    if not wait:
        return subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=folder, env=env, input=stdin, capture_output=True, text=True, timeout=120)


def record(folder: Path) -> dict:
    return json.loads((folder / "record.json").read_text())


def without_server(env: dict | None = None) -> dict:
    env = dict(env or JOB_ENV or job_server.job_environment(os.environ))
    env.pop(job_server.SOCKET_VARIABLE, None)
    return env


def same_but_process(forked: dict, own: dict, forked_folder: Path, own_folder: Path) -> None:
    for key in ("pid", "preloaded"):
        forked.pop(key), own.pop(key)
    own = json.loads(json.dumps(own).replace(str(own_folder), str(forked_folder)))
    assert forked == own


def test_a_job_runs_forked_from_the_server_as_in_its_own_process(server, tmp_path):
    result = run_job(tmp_path / "forked")
    reference = run_job(tmp_path / "own", env=without_server())
    forked, own = record(tmp_path / "forked"), record(tmp_path / "own")
    assert result.returncode == reference.returncode == 0
    assert forked["preloaded"] and not own["preloaded"]  # the fork started with the server's imports
    assert forked["pid"] != own["pid"]
    assert forked["stdin"] == "input lines\n"
    assert (result.stdout, result.stderr) == (reference.stdout, reference.stderr) == ("to standard output\n",
                                                                                      "to standard error\n")
    same_but_process(forked, own, tmp_path / "forked", tmp_path / "own")
    usage = job_server.read_usage(tmp_path / "forked" / "job.log")
    assert usage is not None and usage.cpu_seconds > 0 and usage.max_rss_mb > 0
    assert job_server.read_usage(tmp_path / "own" / "job.log") is None
    assert (tmp_path / "forked" / "job.log").read_text().startswith("the job's log\n")


@pytest.mark.parametrize("behaviour, status", [("3", 3), ("raise", 1)])
def test_a_failing_job_fails_the_same_way(server, tmp_path, behaviour, status):
    result = run_job(tmp_path / "forked", behaviour)
    reference = run_job(tmp_path / "own", behaviour, env=without_server())
    assert record(tmp_path / "forked")["preloaded"]
    assert result.returncode == reference.returncode == status
    assert result.stdout == reference.stdout
    assert result.stderr.splitlines()[-1] == reference.stderr.splitlines()[-1]
    if behaviour == "raise":
        assert "RuntimeError: the job failed" in result.stderr and "Traceback" in result.stderr


def test_a_job_whose_environment_differs_runs_in_its_own_process(server, tmp_path):
    two_threads = {**JOB_ENV, **{name: "2" for name in job_server.THREAD_VARIABLES}}
    result = run_job(tmp_path / "two", env=two_threads)
    assert result.returncode == 0
    assert not record(tmp_path / "two")["preloaded"] and record(tmp_path / "two")["omp"] == "2"
    other = {**JOB_ENV, "HF_HUB_OFFLINE": "0"}
    run_job(tmp_path / "other", env=other)
    assert not record(tmp_path / "other")["preloaded"]
    # the server says why, once per reason, for the run's log
    notes = server.log_path.read_text()
    assert "OMP_NUM_THREADS" in notes and "HF_HUB_OFFLINE" in notes


NAMES = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(base=st.dictionaries(NAMES, st.text(max_size=8), max_size=6), name=NAMES, value=st.text(max_size=8),
       drop=st.booleans())
def test_any_difference_in_the_environment_sends_the_job_to_its_own_process(base, name, value, drop):
    """Any variable added, changed or removed (but the shell's own, which no library reads) is named as the reason,
    whichever variable it is; an equal environment is taken."""
    request = {"executable": sys.executable, "argv": ["job.py"], "env": dict(base)}
    assert job_server._refusal(request, [0, 1, 2], job_server._comparable(base)) == ""
    changed = dict(base)
    if drop and name in changed:
        del changed[name]
    else:
        changed[name] = value
    why = job_server._refusal({**request, "env": changed}, [0, 1, 2], job_server._comparable(base))
    if name in job_server.SHELL_VARIABLES or changed == base:
        assert why == ""
    else:
        assert why and name in why


def test_without_a_server_the_job_runs_in_its_own_process(tmp_path):
    gone = {**without_server(), job_server.SOCKET_VARIABLE: str(tmp_path / "no.sock")}
    for name, env in (("unset", without_server()), ("gone", gone),
                      ("off", {**without_server(), job_server.SOCKET_VARIABLE: job_server.OFF})):
        result = run_job(tmp_path / name, env=env)
        assert result.returncode == 0 and not record(tmp_path / name)["preloaded"]


def wait_for(condition, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    """Running (a zombie that nobody has reaped yet has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_cancelling_the_job_ends_its_fork(server, tmp_path, how):
    """Snakemake cancels a job by signalling its process: the fork goes with it (passed on, or ended by the server
    when the job's process is killed outright)."""
    folder = tmp_path / "cancelled"
    process = run_job(folder, "sleep", wait=False)
    assert wait_for(lambda: (folder / "record.json").exists())
    fork = record(folder)["pid"]
    assert fork != process.pid and alive(fork)
    process.send_signal(how)
    process.wait(timeout=30)
    assert process.returncode == -how
    assert wait_for(lambda: not alive(fork)), "the fork outlived its job"


def test_the_server_ends_with_its_run(tmp_path):
    """A run that ends without stopping its server (killed) leaves no server behind; `stop` removes its folder."""
    owner = subprocess.run(
        [sys.executable, "-c", "from asrmerge.workflow import job_server; s = job_server.start(); "
                               "print(s.process.pid, s.folder, flush=True); import os; os._exit(0)"],
        capture_output=True, text=True, timeout=60, env=without_server())
    pid, folder = owner.stdout.split()
    assert wait_for(lambda: not alive(int(pid)), seconds=60), "the server outlived its run"
    for path in Path(folder).iterdir():
        path.unlink()
    Path(folder).rmdir()
    started = job_server.start()
    try:
        assert os.environ[job_server.SOCKET_VARIABLE] == str(started.socket_path)
    finally:
        job_server.stop(started)
    assert not started.folder.exists() and started.process.poll() is not None
    assert job_server.SOCKET_VARIABLE not in os.environ


#: What the run without the server makes: every kind of model job (the corpus, the base, domain and joint
#: fine-tunes, task vectors, statistics, merges, λ selection, decoding, scores) for a few systems, not the whole run.
OWN_PROCESS_SYSTEMS = ("base", "joint", "finetuned/weather", "merged/ties/density=0.2", "merged/regmean/default")


@pytest.mark.slow
def test_a_run_without_the_job_server_gives_the_same_files(tmp_path):
    forked = MicroRun(tmp_path, name="forked/results")
    own = MicroRun(tmp_path, environment={job_server.SOCKET_VARIABLE: job_server.OFF}, name="own/results")
    forked.start()
    own.start(tuple(layout.path(own.config["results"], layout.SCORES, system=system)
                    for system in OWN_PROCESS_SYSTEMS))
    (_, forked_results, _), (_, own_results, _) = forked.result(), own.result()
    logs = {path.relative_to(forked_results): path for path in (forked_results / layout.LOGS).rglob("*.log")}
    assert logs and all(job_server.read_usage(path) for path in logs.values()), "a job did not run on the server"
    assert not any(job_server.read_usage(own_results / name) for name in logs)
    comparison = compare_runs(own_results, forked_results)
    assert not (comparison.different or comparison.only_first), comparison
    assert len(comparison.identical) > 100


def test_a_forked_jobs_usage_counts_in_its_benchmark(tmp_path):
    """Snakemake's benchmark of a forked job measures the job's own small process; the fork's usage, which the job
    wrote to its log, is added where the run's job times are read (asrmerge.report.results_page.read_jobs)."""
    from asrmerge.report.results_page import read_jobs

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, cpu in (("forked", "0.05"), ("own", "2.5"), ("short", "NA")):
        benchmark = tmp_path / layout.BENCHMARKS / "scores" / f"{name}.tsv"
        benchmark.parent.mkdir(parents=True, exist_ok=True)
        benchmark.write_text(header + f"3.0\t0:00:03\t40.0\t0\t0\t0\t0\t0\t50\t{cpu}\n")
        log = Path(layout.log_of_benchmark(tmp_path, benchmark))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("the job's log\n")
    usage = job_server.Usage(user_seconds=2.0, system_seconds=0.25, max_rss_mb=300.0)
    for name in ("forked", "short"):
        with open(tmp_path / layout.LOGS / "scores" / f"{name}.log", "a") as log:
            log.write(job_server.USAGE_TAG + json.dumps(vars(usage)) + "\n")
    jobs = {Path(job.path).stem: job for job in read_jobs(tmp_path)}
    assert (jobs["forked"].cpu_seconds, jobs["forked"].peak_mib, jobs["forked"].forked) == (2.3, 300.0, True)
    assert (jobs["own"].cpu_seconds, jobs["own"].peak_mib, jobs["own"].forked) == (2.5, 40.0, False)
    assert jobs["short"].cpu_seconds == 2.25  # Snakemake had no sample of the job's own process
