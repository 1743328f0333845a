"""A warm interpreter for a local run's jobs: Python, torch and transformers imported once, each job forked from it.

Every job of the workflow is a fresh Python process that spends 1-4 s of CPU importing torch and transformers
before it does any work, more than the work itself in the demo's many small jobs (docs/measured/speed.md). When a
run executes its jobs on this machine (Snakemake's local executor), the run's first step (Snakefile `onstart`)
starts one server process, which imports what the jobs import (`PRELOAD`) and then waits on a Unix socket in a
private folder. A job's script (`scripts/stage.py`) asks it to run the job (`run_on_server`): the server forks, and
the fork runs the job's own generated script file exactly as `python SCRIPT` would, in the job's working directory,
with its argument list and its standard input, output and error (the open files themselves, passed over the socket),
and in its own process group. The job's process waits, passes on a signal it gets (Snakemake cancelling the job) and
exits with the fork's exit status; the server ends the fork when the job's process goes away, and itself when the
run ends (`stop`, Snakefile `onsuccess`/`onerror`) or the run's process is gone.

What makes a fork the same as a fresh process: the server imports nothing that runs work (no thread pools exist
when it forks, which `serve` checks), and it takes a job only when the job's interpreter (sys.executable) and its
whole environment equal the server's (`job_environment`: the run's environment plus what Snakemake sets for a
one-thread job), since libraries read settings such as OMP_NUM_THREADS, HF_HUB_OFFLINE or TMPDIR when they are
imported. Any other job (more threads, a conda environment, a cluster job, a server that is not there or failed to
start) runs in its own process as before: the server makes jobs faster, never different. tests/test_job_server.py
checks both paths give the same bytes.

Snakemake's benchmark file of a job measures the job's process tree, which the fork is not part of: the job's
process writes the fork's CPU time and peak memory as the last line of the job's log (`USAGE_TAG`, read back by
`read_usage`), which what reads a run's job times adds (asrmerge.report.results_page.read_jobs). The run's total CPU
time (what `/usr/bin/time make demo` reports) includes the forks, since the server is a child of the run's process.
ASRMERGE_JOB_SERVER=off in the environment of `snakemake` turns the server off; on a system other than Linux there
is none (`SUPPORTED`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The environment variable that gives a job the server's socket (and, set to "off" for the run, turns it off).
SOCKET_VARIABLE = "ASRMERGE_JOB_SERVER"
OFF = "off"
#: What the jobs import, imported once by the server: the interpreter side of Snakemake's script preamble, the
#: stages and the libraries their functions import when they run.
PRELOAD = (
    "snakemake.logging",
    "snakemake.iocontainers",
    "torch",
    "transformers.models.whisper.modeling_whisper",
    "asrmerge.workflow.stage",
    "asrmerge.workflow.stages",
    "asrmerge.report.stages",
    "asrmerge.evaluation.decoding",
    "asrmerge.evaluation.selection",
    "asrmerge.evaluation.scoring",
    "asrmerge.training.loop",
    "asrmerge.merging.engine",
)
#: The variables Snakemake sets for a job's thread count (snakemake.shell), and the temporary folder's.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
TMP_VARIABLES = ("TMPDIR", "TMP", "TEMPDIR", "TEMP")
#: Set by the shell that starts a process, and so different between the job and the server: not compared.
SHELL_VARIABLES = ("_", "SHLVL", "PWD", "OLDPWD")
#: The last line of a job's log when it ran on the server: this tag, then a JSON object (`Usage`).
USAGE_TAG = "asrmerge-job-usage "
#: The server waits for forks with process file descriptors and checks a job's user with SO_PEERCRED (Linux).
SUPPORTED = hasattr(os, "pidfd_open") and hasattr(socket, "SO_PEERCRED")
BIND_SECONDS = 30  # the run waits this long for the server's socket, then lets its jobs run in their own processes
READY_SECONDS = 120  # a job waits this long for the server to finish its imports, then runs in its own process
OWNER_CHECK_SECONDS = 1.0
SOCKET_NAME = "jobs.sock"  # in the server's private folder, beside its messages
LOG_NAME = "server.log"

_HEADER = struct.Struct("!I")
_STDIO = (0, 1, 2)
#: True in a fork of the server running a job: its script then runs the job itself.
_IN_FORK = False


@dataclass(frozen=True)
class Usage:
    """What a job's fork used: CPU seconds (user, system) and peak resident memory."""

    user_seconds: float
    system_seconds: float
    max_rss_mb: float

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


@dataclass(frozen=True)
class Server:
    """A started server: its process and its private folder (the socket and the server's messages inside)."""

    process: subprocess.Popen
    folder: Path

    @property
    def socket_path(self) -> Path:
        return self.folder / SOCKET_NAME

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME


# -------------------------------------------------------------------------------------------- the run's side


def job_environment(environ: Mapping[str, str], threads: int = 1) -> dict[str, str]:
    """The environment Snakemake's local executor gives a job of `threads` threads (snakemake.shell): the run's own,
    the thread-count variables and the temporary folder's."""
    env = dict(environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update({name: tempfile.gettempdir() for name in TMP_VARIABLES})
    return env


def start() -> Server | None:
    """Start a server for this process's local jobs and point them at it (SOCKET_VARIABLE in os.environ, which the
    jobs inherit); None when the run's environment turns it off or the system lacks what it needs (Linux: process
    file descriptors, a peer's credentials on a Unix socket), and the jobs run in their own processes."""
    if os.environ.get(SOCKET_VARIABLE) == OFF or not SUPPORTED:
        return None
    folder = Path(tempfile.mkdtemp(prefix="asrmerge-jobs-"))  # mode 0700: only this user reaches the socket
    socket_path = folder / SOCKET_NAME
    os.environ[SOCKET_VARIABLE] = str(socket_path)
    with open(folder / LOG_NAME, "wb") as errors:
        server = Server(process=subprocess.Popen(
            [sys.executable, "-m", "asrmerge.workflow.job_server", str(socket_path), str(os.getpid())],
            env=job_environment(os.environ), stdin=subprocess.DEVNULL, stdout=errors, stderr=errors), folder=folder)
    # the socket exists before the server's imports (jobs wait for those), and within a moment of its start
    deadline = time.monotonic() + BIND_SECONDS
    while not socket_path.exists() and server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return server


def stop(server: Server | None) -> str:
    """End the server (its running jobs with it) and remove its folder; the jobs' variable goes with it. Returns
    what the server wrote (why a job ran in its own process, or why the server could not start), for the run's
    log."""
    if server is None:
        return ""
    if os.environ.get(SOCKET_VARIABLE) == str(server.socket_path):
        del os.environ[SOCKET_VARIABLE]
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    notes = server.log_path.read_text(encoding="utf-8", errors="replace").strip()
    for path in server.folder.iterdir():
        path.unlink()
    server.folder.rmdir()
    return notes


# ------------------------------------------------------------------------------------------------ the job's side


def run_on_server(job: Any) -> bool:
    """Run this job (the rule script's `snakemake` object) on the run's server; never returns when the server took
    it (the process exits with the job's status). False when the job is to run in this process: no server for it,
    or this process is the server's fork running it."""
    path = os.environ.get(SOCKET_VARIABLE)
    if _IN_FORK or not path or path == OFF:
        return False
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(READY_SECONDS)
        connection.connect(path)
        request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "executable": sys.executable}
        _send(connection, request, fds=_STDIO)
        reply = _receive(connection)
    except (OSError, ValueError):  # no server (any more), or it could not take the job: run it here
        return False
    if not reply.get("accepted"):
        connection.close()
        return False
    _wait_for_fork(connection, int(reply["pid"]), job.log[0] if job.log else None)
    return True  # not reached


def _wait_for_fork(connection: socket.socket, pid: int, log_path: str | None) -> None:
    """Pass signals on to the fork's process group, then exit as the fork did, its usage written to the job's log."""

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    connection.settimeout(None)
    try:
        result = _receive(connection)
    except (OSError, ValueError):
        forward(signal.SIGKILL, None)
        print("asrmerge: the job server stopped while running this job", file=sys.stderr)
        os._exit(1)
    usage = Usage(**result["usage"])
    if log_path is not None and Path(log_path).exists():
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(USAGE_TAG + json.dumps(vars(usage)) + "\n")
    if result["exit_code"] < 0:  # the fork was ended by a signal: so is this process
        signal.signal(-result["exit_code"], signal.SIG_DFL)
        os.kill(os.getpid(), -result["exit_code"])
    os._exit(result["exit_code"])


def read_usage(log_path: str | os.PathLike[str]) -> Usage | None:
    """The usage a job's log records on its last line when the job ran on the server (else None)."""
    try:
        lines = Path(log_path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if not lines or not lines[-1].startswith(USAGE_TAG):
        return None
    return Usage(**json.loads(lines[-1][len(USAGE_TAG):]))


# --------------------------------------------------------------------------------------------- the server itself


def serve(socket_path: str, owner: int) -> None:
    """Import PRELOAD, then run the jobs sent to `socket_path` until told to stop or `owner` (the run) is gone."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)  # jobs may connect while the imports run; they are answered after
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the run, which cancels its jobs and stops this
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    environment = _comparable(os.environ)  # as the server started: the imports may set variables (torch does)
    for module in PRELOAD:
        if os.getppid() != owner:  # the run ended while this was importing
            return
        importlib.import_module(module)
    _check_forkable()
    sys.stdout.flush()
    sys.stderr.flush()
    server = _Forks(listener, environment)
    while not stopping and os.getppid() == owner:
        server.step(OWNER_CHECK_SECONDS)
    server.end_all()


def _check_forkable() -> None:
    """A fork inherits only the forking thread (another's held locks stay held) and no usable CUDA context."""
    tasks = Path("/proc/self/task")
    threads = len(list(tasks.iterdir())) if tasks.is_dir() else 1
    if threads != 1:
        raise SystemExit(f"asrmerge job server: {threads} threads after the imports; not forking")
    import torch

    if torch.cuda.is_initialized():
        raise SystemExit("asrmerge job server: CUDA was initialised by the imports; not forking")


class _Forks:
    """The server's loop: takes jobs from the listener, forks each, reports each fork's end to its job."""

    def __init__(self, listener: socket.socket, environment: Mapping[str, str]):
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("listener", 0))
        self.jobs: dict[int, tuple[socket.socket, int]] = {}  # fork's pid -> the job's connection, the fork's pidfd
        self.environment = environment  # the server's before its imports, which each job's must equal
        self.refusals: set[str] = set()

    def step(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout=timeout):
            kind, pid = key.data
            if kind == "listener":
                try:
                    self._accept()
                except OSError as err:  # that one job runs in its own process, or fails; the server goes on
                    print(f"asrmerge job server: a job could not be taken: {err}", file=sys.stderr, flush=True)
            elif kind == "fork":  # the fork ended: report how
                self._report(pid)
            else:  # the job's process closed its end before the fork ended: end the fork
                self.selector.unregister(key.fileobj)
                _end(pid)

    def end_all(self) -> None:
        for pid in self.jobs:
            _end(pid)

    def _accept(self) -> None:
        connection, _ = self.listener.accept()
        connection.settimeout(10)
        try:
            if _peer_uid(connection) != os.getuid():  # the folder's mode keeps others out; this says so again
                raise ValueError("a job of another user")
            request, fds = _receive(connection, with_fds=True)
        except (OSError, ValueError):
            connection.close()
            return
        why = _refusal(request, fds, self.environment)
        if why:
            for fd in fds:
                os.close(fd)
            if why not in self.refusals:  # once per reason: the run's log shows it (`stop`)
                self.refusals.add(why)
                print(f"asrmerge job server: a job ran in its own process: {why}", file=sys.stderr, flush=True)
            _send(connection, {"accepted": False, "why": why})
            connection.close()
            return
        pid = os.fork()
        if pid == 0:
            self._close_in_fork()
            _run_in_fork(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.jobs[pid] = (connection, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, ("fork", pid))
        try:
            _send(connection, {"accepted": True, "pid": pid})
        except OSError:  # the job's process is gone: so is the job
            _end(pid)
            return
        self.selector.register(connection, selectors.EVENT_READ, ("job", pid))

    def _close_in_fork(self) -> None:
        """The fork keeps none of the server's files: a job's end would otherwise not reach another job."""
        self.selector.close()
        self.listener.close()
        for connection, pidfd in self.jobs.values():
            connection.close()
            os.close(pidfd)

    def _report(self, pid: int) -> None:
        connection, pidfd = self.jobs.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status, rusage = os.wait4(pid, 0)
        usage = Usage(user_seconds=rusage.ru_utime, system_seconds=rusage.ru_stime,
                      max_rss_mb=rusage.ru_maxrss / 1024)
        result = {"exit_code": os.waitstatus_to_exitcode(status), "usage": vars(usage)}  # -N: ended by signal N
        if connection in self.selector.get_map():  # the job's process is still there
            self.selector.unregister(connection)
            try:
                _send(connection, result)
            except OSError:  # the job's process is gone
                pass
        connection.close()


def _peer_uid(connection: socket.socket) -> int:
    credentials = struct.Struct("3i")  # pid, uid, gid
    return credentials.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, credentials.size))[1]


def _refusal(request: Mapping[str, Any], fds: list[int], environment: Mapping[str, str]) -> str:
    """Why the server may not run this job as the job's own process would ("" when it may)."""
    if request.get("executable") != sys.executable:
        return f"the job runs {request.get('executable')}, the server {sys.executable}"
    differ = sorted({name for name, _ in set(_comparable(request.get("env", {})).items()) ^ set(environment.items())})
    if differ:
        return "the job's environment differs from the server's in " + ", ".join(differ)
    if len(fds) != len(_STDIO) or not request.get("argv"):
        return "the job sent no script or not its standard files"
    return ""


def _comparable(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name not in SHELL_VARIABLES}


def _run_in_fork(request: Mapping[str, Any], fds: list[int]) -> None:
    """The fork: become the job's process (its own process group, standard files, directory, arguments), run its
    script as `python SCRIPT` would, exit with its status."""
    global _IN_FORK
    _IN_FORK = True
    status = 1
    try:
        os.setpgid(0, 0)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip(_STDIO, fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])  # the environment is the job's already: it equalled the server's at its start
        script = os.path.abspath(request["argv"][0])
        sys.argv = list(request["argv"])
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            status = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the job's failure, reported as python reports it
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)


def _end(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


# -------------------------------------------------------------------------------------------------- the messages


def _send(connection: socket.socket, message: Mapping[str, Any], fds: tuple[int, ...] = ()) -> None:
    """A message: its length and, with it, the open files `fds`; then the JSON."""
    data = json.dumps(message).encode()
    header = _HEADER.pack(len(data))
    if fds:
        socket.send_fds(connection, [header], list(fds))
    else:
        connection.sendall(header)
    connection.sendall(data)


def _receive(connection: socket.socket, with_fds: bool = False) -> Any:
    fds: list[int] = []
    if with_fds:  # the open files come with the message's first bytes
        header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, len(_STDIO))
        if not header:
            raise ValueError("the connection closed")
        header += _exactly(connection, _HEADER.size - len(header))
    else:
        header = _exactly(connection, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    message = json.loads(_exactly(connection, size))
    return (message, fds) if with_fds else message


def _exactly(connection: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = connection.recv(left)
        if not chunk:
            raise ValueError("the connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":  # the functions of the imported module, whose _IN_FORK the job's script reads
    from asrmerge.workflow import job_server

    job_server.serve(sys.argv[1], int(sys.argv[2]))
