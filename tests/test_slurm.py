"""The micro workflow through a real single-node SLURM (tests/slurm_cluster.py), with profiles/slurm.

One module-scoped run does everything, to keep the wall time small:
  * the session's micro run (conftest `micro_run`: --cores 2, profiles/default) is the reference, made beside the
    SLURM run when no other test has made it yet;
  * the same config, its merge branches cut to SLURM_METHODS, runs through `snakemake --workflow-profile
    profiles/slurm`, with the profile's site settings (partition, account, GPU model) swapped for the local
    cluster's on the command line and each rule's threads as profiles/default sets them (float results depend on a
    job's thread count);
  * while it runs, the fine-tune of one domain waits before its first step (a hold file,
    asrmerge.training.loop.HOLD_ENV) and is cancelled there with scancel, then the hold is released: the profile's
    `retries` must make Snakemake resubmit it, and the workflow must still finish.
Then: every non-local job of the DAG went through sbatch and ended COMPLETED in sacct (the cancelled
attempt CANCELLED, its resubmission COMPLETED), GPU rules held a GPU, the local rules never reached
SLURM, and every result file equals the reference's (asrmerge.workflow.compare; the reference has more merge
branches, so only the tables and figures that sum up all systems differ).

Needs root and the Debian packages (tests/slurm_install.sh); skipped otherwise. Only
test_profile_covers_every_rule needs neither (no cluster, a dry run).
"""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402
from asrmerge import layout  # noqa: E402
from asrmerge.merging.registry import get_method  # noqa: E402
from asrmerge.training.loop import HOLD_ENV  # noqa: E402
from asrmerge.workflow.compare import compare_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "micro_config.yaml"
PROFILE = ROOT / "profiles" / "slurm"
RUN_TIMEOUT_S = int(os.environ.get("ASRMERGE_SLURM_TEST_TIMEOUT", "1500"))
# Every rule of the DAG with the fewest merge branches: a λ grid (select_lambda chooses), the statistics rule
# (RegMean's Gram matrices) and the learned-coefficients rule (AdaMerging). Other methods add only more jobs of the
# same rules, each costing the run a few SLURM status checks.
SLURM_METHODS = {"task_arithmetic", "regmean", "adamerging"}
FAULT_RULE = "finetune_domain"
FAULT_DOMAIN = "weather"  # the micro config's first domain
GPU_RULES = {"base_model", "finetune_domain", "finetune_joint", "statistics", "adamerging_coefficients", "merge",
             "select_lambda", "decode_model", "decode_merged"}
CPU_RULES = {"corpus_set", "check_splits", "import_finetune", "task_vector", "task_spectra", "merge_diagnostics", "score",
             "export_merged", "export_best_merge"}

_reason = slurm_cluster.unavailable_reason()
if _reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
    _reason = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]', or make venv)"
needs_cluster = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(_reason is not None, reason=f"local SLURM unavailable: {_reason}"),
]


def with_cluster(test):
    for mark in needs_cluster:
        test = mark(test)
    return test


def snakemake_cmd(config_path: Path, *args: str) -> list[str]:
    """Snakemake on the micro config, working directory = the config's folder (a --configfile replaces
    config.yaml whole, in the main process and in every SLURM job, so both plan the same DAG)."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(config_path.parent), "--configfile", str(config_path),
            *args]


def write_config(tmp: Path, name: str, config: dict) -> tuple[Path, Path]:
    """`config` with its merge branches cut to SLURM_METHODS, its results under tmp/name."""
    methods = [m for m in config["merge"]["methods"] if m["method"] in SLURM_METHODS]
    assert {m["method"] for m in methods} == SLURM_METHODS, "the micro config lost a method"
    config = {**config, "merge": {**config["merge"], "methods": methods}, "results": str(tmp / name / "results")}
    path = tmp / name / "micro.yaml"  # not config.yaml, see snakemake_cmd
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))
    return path, Path(config["results"])


def _cli_value(value) -> str:
    """A profile value as snakemake's profile parser passes it on (numeric strings stay strings)."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                kind(value)
                return repr(value)
            except ValueError:
                pass
    return str(value)


def local_site_overrides(cluster: slurm_cluster.SlurmCluster) -> list[str]:
    """--default-resources/--set-resources equal to the profile's, with the site settings made local.

    On the command line both options replace the profile's whole mapping, so everything else is passed on
    unchanged: the run exercises the profile's own runtimes, memory, CPUs and GPU requests.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())  # anchors and << merges resolved
    defaults = dict(profile["default-resources"], slurm_partition=cluster.partition, slurm_account=cluster.account)
    args = ["--default-resources", *(f"{k}={_cli_value(v)}" for k, v in defaults.items())]
    set_resources = []
    for rule, resources in profile.get("set-resources", {}).items():
        for key, value in resources.items():
            if key == "gpu_model":  # the fake GPUs have no model
                continue
            if key == "slurm_partition":
                value = cluster.partition
            set_resources.append(f"{rule}:{key}={_cli_value(value)}")
    if set_resources:
        args += ["--set-resources", *set_resources]
    return args


def local_threads() -> list[str]:
    """--set-threads as profiles/default sets them, the reference run's profile."""
    threads = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())["set-threads"]
    return ["--set-threads", *(f"{rule}={n}" for rule, n in threads.items())]


def planned_jobs(config_path: Path) -> dict[str, int]:
    """Rule -> number of jobs in the DAG (dry run)."""
    out = subprocess.run(snakemake_cmd(config_path, "--dry-run", "--quiet", "rules"), capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.stdout, re.MULTILINE)
            if m.group(1) != "total"}


def declared_localrules() -> set[str]:
    """Rules named in `localrules:` directives (inline, or one per indented line below it)."""
    names = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("localrules:"):
                continue
            names |= set(re.findall(r"\w+", line[len("localrules:"):]))
            for below in lines[i + 1:]:
                if not re.fullmatch(r"\s+\w+,?\s*", below):
                    break
                names.add(below.strip().rstrip(","))
    return names


def rule_of(comment: str, rules) -> str | None:
    """The plugin's sbatch --comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    for rule in sorted(rules, key=len, reverse=True):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    return None


def workflow_rules() -> set[str]:
    return {m.group(1) for path in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]
            for m in re.finditer(r"^rule (\w+):", path.read_text(), re.MULTILINE)}


def test_profile_covers_every_rule(tmp_path):
    """No cluster needed: the profile parses, retries, and gives every submitted rule its resources."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert {"slurm_partition", "slurm_account", "runtime", "mem_mb"} <= set(profile["default-resources"])
    set_resources = profile["set-resources"]
    submitted = workflow_rules() - declared_localrules() - {"all"}
    assert submitted == GPU_RULES | CPU_RULES, "a new rule: classify it here and give it resources in the profile"
    assert set(set_resources) == submitted
    for rule in GPU_RULES:
        assert set_resources[rule].get("gpu") == 1, rule
    for rule in CPU_RULES:
        assert not set_resources[rule].get("gpu"), rule
    config, _ = write_config(tmp_path, "dry", yaml.safe_load(MICRO.read_text()))
    out = subprocess.run(snakemake_cmd(config, "--dry-run", "--workflow-profile", str(PROFILE)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "gpu=1" in out.stdout and "slurm_partition=" in out.stdout


@pytest.fixture(scope="module")
def cluster():
    started = time.monotonic()
    c = slurm_cluster.SlurmCluster()
    c.start()
    print(f"\nlocal SLURM started in {c.start_seconds:.1f} s"
          + (f" (after waiting {c.lock_wait_seconds:.0f} s for another one)" if c.lock_wait_seconds > 1 else ""))
    yield c
    root, conf = c.root, str(c.slurm_conf)
    c.stop()
    # Leave the machine as it was: daemons gone (stop() waited on every pid), link and folder removed.
    assert not c._procs
    link = slurm_cluster.DEFAULT_CONF
    assert not (link.is_symlink() and os.readlink(link) == conf), f"the {link} link was not removed"
    assert not root.exists(), f"{root} was not removed"
    print(f"\nlocal SLURM up for {time.monotonic() - started:.0f} s in all")


@with_cluster
def test_sbatch_hostname_completes(cluster):
    """Smoke test of the cluster alone: a GPU job runs and sacct reports it COMPLETED."""
    out = cluster.path("log", "hostname-%j.out")
    job = cluster.run("sbatch", "--parsable", "--job-name", "smoke", "--gpus=1", "-A", cluster.account,
                      "-o", str(out), "--wrap", "hostname").stdout.strip()
    row = {}
    for _ in range(300):
        row = next((r for r in cluster.sacct() if r["JobID"] == job), {})
        if row.get("State") not in (None, "", "PENDING", "RUNNING", "COMPLETING"):
            break
        time.sleep(0.1)
    assert row.get("State") == "COMPLETED", f"{row}\n{cluster.log_tails()}"
    assert "gres/gpu=1" in row["AllocTRES"]
    assert cluster.path("log", f"hostname-{job}.out").read_text().strip() == cluster.node


def inject_fault(cluster, proc: subprocess.Popen, results: Path, hold: Path) -> dict | None:
    """scancel the FAULT_DOMAIN fine-tune while it is held before its first step (its script has loaded the model
    and data and waits while `hold` exists: asrmerge.training.loop.HOLD_ENV), then release the hold for the retry. The
    job cannot finish before it is cancelled, whatever the machine's speed."""
    log = results / "logs" / "models" / "finetuned" / f"{FAULT_DOMAIN}.log"
    try:
        while proc.poll() is None:
            held = log.exists() and "holding before the first step" in log.read_text()
            for job_id, _name, comment, state in cluster.squeue():
                if held and state == "RUNNING" and comment == f"rule_{FAULT_RULE}_wildcards_{FAULT_DOMAIN}":
                    cluster.run("scancel", job_id)
                    return {"JobID": job_id, "Comment": comment}
            time.sleep(0.2)
        return None
    finally:
        hold.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def runs(cluster, micro_run, tmp_path_factory):
    """The SLURM run of the session's micro config, with one scancel; its results, records and the reference's.

    The session's micro run, the reference, is made beside it if it has not been made yet: the SLURM run spends much
    of its time waiting for the plugin's status checks, which leaves the cores to the other run."""
    micro_run.start()
    config = micro_run.config
    tmp = tmp_path_factory.mktemp("slurm")
    env = {**cluster.env, "PYTHONHASHSEED": "0"}  # as the reference run
    slurm_config, slurm_results = write_config(tmp, "slurm", config)

    holds = tmp / "holds"  # the fault domain's fine-tune waits before its first step until it has been cancelled
    holds.mkdir()
    (holds / f"{FAULT_DOMAIN}.hold").touch()
    env[HOLD_ENV] = str(holds)

    dag = planned_jobs(slurm_config)
    slurm_log_path = tmp / "slurm.log"
    cmd = ["timeout", "-s", "INT", "-k", "10", str(RUN_TIMEOUT_S),
           *snakemake_cmd(slurm_config, "--workflow-profile", str(PROFILE), *local_site_overrides(cluster),
                          *local_threads(), "--slurm-init-seconds-before-status-checks", "1",
                          "--slurm-logdir", str(tmp / "slurm_logs"), "--slurm-keep-successful-logs")]
    started = time.monotonic()
    proc = None
    try:
        with open(slurm_log_path, "w") as slurm_log:
            proc = subprocess.Popen(cmd, stdout=slurm_log, stderr=subprocess.STDOUT, env=env)
            cancelled = inject_fault(cluster, proc, slurm_results, holds / f"{FAULT_DOMAIN}.hold")
            proc.wait()
    except BaseException:
        if proc is not None and proc.poll() is None:  # stop the run (SIGINT: snakemake scancels its jobs), then fail
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    slurm_text = slurm_log_path.read_text()
    print(f"\nSLURM run {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, (f"SLURM run failed ({proc.returncode}; 124 = timed out; job logs under "
                                  f"{tmp / 'slurm_logs'}):\n{slurm_text[-6000:]}\n{cluster.log_tails()}")
    _, reference_results, _ = micro_run.result()
    records = cluster.sacct()
    print("sacct Elapsed per rule (s): " + ", ".join(
        f"{rule} {sum(_seconds(r['Elapsed']) for r in records if rule_of(r['Comment'], [rule])):.0f}"
        for rule in dag))
    yield {
        "dag": dag, "log": slurm_text, "records": records, "cancelled": cancelled,
        "reference": reference_results, "slurm": slurm_results,
        "partition": cluster.partition, "account": cluster.account,
    }
    # tmp is left to pytest (it keeps the last three sessions' folders): the logs help when a test failed.


def _seconds(elapsed: str) -> int:
    days, _, hms = elapsed.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def workflow_records(runs) -> list[dict[str, str]]:
    return [r for r in runs["records"] if r["Comment"].startswith("rule_")]


@with_cluster
def test_local_rules_never_reach_slurm(runs):
    local_in_log = set(re.findall(r"^localrule (\w+):", runs["log"], re.MULTILINE))
    assert local_in_log == declared_localrules() | {"all"}
    assert not {rule_of(r["Comment"], runs["dag"]) for r in workflow_records(runs)} & local_in_log


@with_cluster
def test_every_remote_job_went_through_sbatch_and_completed(runs):
    local = declared_localrules() | {"all"}
    expected = {rule: n for rule, n in runs["dag"].items() if rule not in local}
    records = workflow_records(runs)
    assert len({r["JobName"] for r in records}) == 1, "one snakemake run, one run uuid as job name"
    last_attempt = {}
    for r in sorted(records, key=lambda r: int(r["JobID"])):
        last_attempt[r["Comment"]] = r
    per_rule = {}
    for comment in last_attempt:
        rule = rule_of(comment, runs["dag"])
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == expected
    assert {c: r["State"] for c, r in last_attempt.items() if r["State"] != "COMPLETED"} == {}
    assert all(r["ExitCode"] == "0:0" for r in last_attempt.values())
    assert len(records) == sum(expected.values()) + 1  # + the resubmission of the cancelled job
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", runs["log"])
    assert sorted(submitted, key=int) == sorted((r["JobID"] for r in records), key=int)


@with_cluster
def test_jobs_got_the_local_partition_account_and_gpus(runs):
    for r in workflow_records(runs):
        rule = rule_of(r["Comment"], runs["dag"])
        assert (r["Partition"], r["Account"]) == (runs["partition"], runs["account"]), r
        has_gpu = "gres/gpu=1" in r["AllocTRES"]
        assert has_gpu == (rule in GPU_RULES), (rule, r["AllocTRES"])
    # every submitted rule ran, but import_finetune (this run supplies no fine-tune of its own) and export_best_merge
    # (the micro config exports every merge: merge.export_models all)
    not_run = {"import_finetune", "export_best_merge"}
    assert {rule_of(r["Comment"], runs["dag"]) for r in workflow_records(runs)} == GPU_RULES | CPU_RULES - not_run


@with_cluster
def test_cancelled_job_was_resubmitted(runs):
    cancelled = runs["cancelled"]
    assert cancelled is not None, f"the {FAULT_DOMAIN} fine-tune was never seen held and RUNNING"
    attempts = sorted((r for r in workflow_records(runs) if r["Comment"] == cancelled["Comment"]),
                      key=lambda r: int(r["JobID"]))
    assert [a["State"].split()[0] for a in attempts] == ["CANCELLED", "COMPLETED"], attempts
    assert attempts[0]["JobID"] == cancelled["JobID"]
    assert "Trying to restart job" in runs["log"]


@with_cluster
def test_outputs_equal_the_local_run(runs):
    """Every result file of the SLURM run (run records aside) equals the reference's, tensor by tensor and byte for
    byte: data, models, task vectors, statistics, merges, hypotheses, scores, exported models. The reference has the
    other methods' branches too, so its per-test-set table holds the SLURM run's rows and more, and the tables and
    figures that sum up every system differ."""
    reference, cluster_run = runs["reference"], runs["slurm"]
    comparison = compare_runs(reference, cluster_run)
    assert not comparison.only_second
    # only in the reference: the other methods' branches, and the statistics only they read
    other_methods = {m["method"] for m in yaml.safe_load(MICRO.read_text())["merge"]["methods"]} - SLURM_METHODS
    their_kinds = {get_method(m).statistics for m in other_methods} - {get_method(m).statistics for m in SLURM_METHODS}
    their_statistics = {str(p.relative_to(reference)) for kind in their_kinds - {None}
                        for p in reference.glob(layout.STATISTICS.format(domain="*", kind=kind))}
    assert [f for f in comparison.only_first if not set(Path(f).parts) & other_methods and f not in their_statistics] == []
    summaries = [f for f in comparison.different if Path(f).parts[0] in ("tables", "figures")]
    assert comparison.different == summaries, "\n".join(comparison.report())
    table = layout.TABLE.format(name=layout.TABLE_FILES["csv"])
    rows = (cluster_run / table).read_text().splitlines()
    assert len(rows) > 20 and set(rows) <= set((reference / table).read_text().splitlines())
    compared = set(comparison.identical)
    for pattern in ("merges/*/*/task_vector.safetensors", "merged_models/*/*/model.safetensors", "hypotheses/**/*.jsonl",
                    "scores/**/*.json"):
        found = {str(p.relative_to(cluster_run)) for p in cluster_run.glob(pattern)}
        assert found and found <= compared, pattern
