"""A throwaway single-node SLURM on localhost, for tests (root only).

Starts, from the Debian packages (tests/slurm_install.sh), everything SLURM needs on this machine:

    munged      private key and socket        (not /etc/munge, not /run/munge)
    mariadbd    private data dir, 127.0.0.1   (not /var/lib/mysql)
    slurmdbd    accounting, so that sacct works (the snakemake plugin polls it)
    slurmctld   controller, private StateSaveLocation
    slurmd      one node with N fake GPUs (gres.conf File= char devices aliasing /dev/null)

All configuration, state, sockets, pid files and logs live in one temporary folder (``SlurmCluster.root``);
clients find the cluster through ``SLURM_CONF`` (use ``cluster.env``), the ports are free ones picked at
start, so a MariaDB already on the machine is neither used nor disturbed. The one thing outside that folder
is a symlink /etc/slurm/slurm.conf -> our slurm.conf, for as long as the cluster runs: the snakemake jobstep
plugin strips SLURM_CONF (every SLURM_* variable) before it calls srun inside a job, so srun must find the
configuration at the default path. The symlink is removed on stop (and /etc/slurm too if we created it);
a real /etc/slurm/slurm.conf is never touched: then the cluster refuses to start (see unavailable_reason).
Because of that one shared path, only one test cluster runs on a machine at a time: start() takes an exclusive
flock on the /etc/slurm directory itself (no lock file left behind; released by stop(), or by the kernel when the
process dies) and waits for it, as it waits while the link points at a cluster whose daemons still run.
Nothing is written to /run or /var. Every daemon runs in the foreground as a child of this process (``-D``/``-F``), so it
is stopped by the pid it was started with, and reaped; each also writes its own pid file, which ``stop``
cross-checks. Readiness is probed functionally (``munge -n | unmunge``, ``SELECT 1``, ``sacctmgr``,
``scontrol ping``, node idle in ``sinfo``), never with pgrep.

    with SlurmCluster() as cluster:               # or cluster.start() ... cluster.stop()
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

Pitfalls recorded in shared/reference/slurm-local.md are handled here: no cgroup.conf (task/none,
proctrack/linuxproc), RealMemory large enough for any mem_mb (memory is not enforced; SlurmdParameters=
config_overrides lets the node announce more CPUs/memory than the hardware), accounting through slurmdbd
(without it the plugin's sacct polling loops forever).
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# Binaries the cluster needs: (name, Debian package).
BINARIES = {
    "munged": "munge", "munge": "munge", "unmunge": "munge", "mungekey": "munge",
    "mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server", "mariadb": "mariadb-client",
    "slurmdbd": "slurmdbd", "slurmctld": "slurmctld", "slurmd": "slurmd",
    "sbatch": "slurm-client", "sacct": "slurm-client", "sacctmgr": "slurm-client", "scontrol": "slurm-client",
    "sinfo": "slurm-client", "squeue": "slurm-client", "scancel": "slurm-client", "srun": "slurm-client",
}
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
LINK_PREFIX = "/tmp/asrmerge-slurm-"  # our clusters' folders; a symlink into one is ours (maybe stale)
LOCK_TIMEOUT_S = float(os.environ.get("ASRMERGE_SLURM_LOCK_TIMEOUT", "1800"))
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if which(name) is None]


def unavailable_reason() -> str | None:
    """Why a local cluster cannot be started here (None when it can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting a local SLURM needs root (the daemons run as root)"
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        if not (DEFAULT_CONF.is_symlink() and os.readlink(DEFAULT_CONF).startswith(LINK_PREFIX)):
            return (f"{DEFAULT_CONF} exists: this machine has its own SLURM configuration, which the "
                    "test cluster would have to shadow (srun inside jobs reads the default path)")
    missing = missing_binaries()
    if missing:
        packages = sorted({BINARIES[m] for m in missing})
        return (f"SLURM/munge/MariaDB binaries missing ({', '.join(missing)}); "
                f"run tests/slurm_install.sh (apt packages: {' '.join(packages)})")
    return None


def _alive(pid: int, name: str) -> bool:
    """pid runs `name` and is not a zombie (/proc, as pid files go stale and PID 1 may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X") and name.encode() in cmdline


def linked_cluster_in_use() -> bool:
    """Whether /etc/slurm/slurm.conf links to a test cluster that is starting or running (maybe another
    process's, e.g. a second test session on the same machine)."""
    if not DEFAULT_CONF.is_symlink():
        return False
    target = Path(os.readlink(DEFAULT_CONF))
    if time.time() - DEFAULT_CONF.lstat().st_mtime < 120:  # just made: its daemons may not have pid files yet
        return target.exists()
    for pidfile in (target.parent.parent / "run").glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid, pidfile.stem):
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """os.environ without SLURM job/submission variables (a CI runner may itself be a SLURM job)."""
    prefixes = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SACCT_", "SINFO_", "SCONTROL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = SEARCH_PATH
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (pytest killed by a CI timeout),
    so that no daemon outlives it even when stop() never runs. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ClusterError(RuntimeError):
    pass


@dataclass
class SlurmCluster:
    """One node (this host) in one partition; ``start()`` then ``stop()`` (or use as a context manager)."""

    cluster_name: str = "asrmergetest"
    partition: str = "debug"
    account: str = "root"            # sacctmgr creates the root account with the cluster
    # More CPUs and GPUs than the machine has (SlurmdParameters=config_overrides): only scheduling sees them, and
    # a whole level of the DAG (e.g. 7 score jobs, 4 GPU decodes/fine-tunes) can then run at once, which matters
    # because the plugin's status polling backs off (1 s, +10 s per poll without news).
    cpus: int = max(16, 2 * (os.cpu_count() or 1))
    gpus: int = 8                    # fake: every GPU is a char device aliasing /dev/null
    real_memory_mb: int = 256_000    # bookkeeping only (memory is not enforced); covers any mem_mb
    startup_timeout_s: float = 60.0
    root: Path | None = None         # created by start() under /tmp unless given
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    start_seconds: float | None = field(default=None, init=False)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False, repr=False)
    _pidfiles: dict[str, Path] = field(default_factory=dict, init=False, repr=False)
    _own_root: bool = field(default=False, init=False, repr=False)
    _linked: bool = field(default=False, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)
    lock_wait_seconds: float = field(default=0.0, init=False)
    _made_etc_dir: bool = field(default=False, init=False, repr=False)

    # ------------------------------------------------------------------ paths and environment
    def path(self, *parts: str) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root.joinpath(*parts)

    @property
    def slurm_conf(self) -> Path:
        return self.path("etc", "slurm.conf")

    @property
    def munge_socket(self) -> Path:
        return self.path("munge", "munge.socket")

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (sbatch, sacct, snakemake ...) of this cluster."""
        return {**clean_environment(), "SLURM_CONF": str(self.slurm_conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout, **kw)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "SlurmCluster":
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        self._acquire_machine()
        t0 = time.monotonic()
        if self.root is None:
            # Under /tmp, not pytest's 0700 tmp_path: munged insists that every directory above its socket
            # be executable by all.
            self.root = Path(tempfile.mkdtemp(prefix=Path(LINK_PREFIX).name, dir=Path(LINK_PREFIX).parent))
            self._own_root = True
        self.root.chmod(0o755)
        atexit.register(self.stop)
        try:
            self._write_configs()
            self._link_default_conf()
            self._start_munge()
            self._start_mariadb()
            self._start_slurmdbd()
            self._start_slurmctld()
            self._start_slurmd()
        except BaseException as err:  # noqa: BLE001 (any failure, interrupts included, stops the daemons first)
            logs = self.log_tails()
            self.stop(remove=False)
            raise ClusterError(f"local SLURM did not start; files kept in {self.root}\n{logs}") from err
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop exactly the daemons this object started (by pid), newest first; remove the folder."""
        atexit.unregister(self.stop)
        try:
            self._stop_daemons()
        finally:
            self._unlink_default_conf()
            self._release_machine()
        if remove and self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _acquire_machine(self) -> None:
        """Wait until no other test cluster runs here: hold the flock on /etc/slurm, and no live cluster is
        behind the link (one started by code without the lock)."""
        import fcntl

        t0 = time.monotonic()
        said = False
        if not DEFAULT_CONF.parent.is_dir():
            DEFAULT_CONF.parent.mkdir(parents=True)
            self._made_etc_dir = True
        lock = os.open(DEFAULT_CONF.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if not linked_cluster_in_use():
                        break
                    fcntl.flock(lock, fcntl.LOCK_UN)  # an older cluster without the lock: let it finish
                except BlockingIOError:
                    pass
                if time.monotonic() - t0 > LOCK_TIMEOUT_S:
                    raise ClusterError(f"another local test cluster kept {DEFAULT_CONF} for "
                                       f"{LOCK_TIMEOUT_S:.0f} s (ASRMERGE_SLURM_LOCK_TIMEOUT)")
                if not said:
                    print(f"waiting for another local test cluster on this machine ({DEFAULT_CONF})", flush=True)
                    said = True
                time.sleep(2)
        except BaseException:
            os.close(lock)
            self._unlink_default_conf()  # only removes the /etc/slurm we may have made
            raise
        self._lock = lock
        self.lock_wait_seconds = time.monotonic() - t0

    def _release_machine(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def _stop_daemons(self) -> None:
        if "slurmctld" in self._procs and self._alive("slurmctld"):
            # Cancel what is still queued or running (all of it is ours: SLURM_CONF points at this cluster),
            # so that no job step outlives slurmd; then ask the controller to stop itself and slurmd.
            self.run("scancel", "--user", "root", check=False, timeout=10)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.strip()
                if not out:
                    break
                time.sleep(0.5)
            self.run("scontrol", "shutdown", check=False, timeout=10)
        for name in reversed(list(self._procs)):
            proc = self._procs[name]
            self._check_pidfile(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()

    # ------------------------------------------------------------------ queries used by tests
    def sacct(self, *args: str, fields: tuple[str, ...] = (
            "JobID", "JobName", "Comment", "State", "ExitCode", "Partition", "Account", "AllocTRES",
            "Elapsed")) -> list[dict[str, str]]:
        """One dict per job allocation (-X) of any user since the cluster started."""
        out = self.run("sacct", "-X", "-a", "-n", "-P", "--starttime", "2000-01-01", "--format",
                       ",".join(fields), *args).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    def squeue(self, fmt: str = "%i|%j|%k|%T") -> list[list[str]]:
        """Queued and running jobs; default columns: id, name, comment, state."""
        out = self.run("squeue", "-h", "-o", fmt, check=False).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def log_tails(self, lines: int = 15) -> str:
        if self.root is None or not self.path("log").is_dir():
            return ""
        parts = []
        for log in sorted(self.path("log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ internals
    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _check_pidfile(self, name: str) -> None:
        """The daemon's own pid file must name the process we started (it does in foreground mode)."""
        pidfile = self._pidfiles.get(name)
        proc = self._procs[name]
        if pidfile is None or not pidfile.exists() or proc.poll() is not None:
            return
        recorded = pidfile.read_text().strip()
        if recorded and recorded != str(proc.pid):  # never signal a pid we did not start
            warnings.warn(f"{name}: pid file {pidfile} says {recorded}, we started {proc.pid}; stopping {proc.pid}", stacklevel=2)

    def _spawn(self, name: str, cmd: list[str], pidfile: Path | None) -> None:
        out = open(self.path("log", f"{name}.out"), "wb")
        self._procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to pytest does not reach the daemons; stop() does
            preexec_fn=_die_with_parent,
        )
        out.close()
        if pidfile is not None:
            self._pidfiles[name] = pidfile

    def _wait(self, name: str, probe, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self._alive(name):
                raise ClusterError(f"{name} exited with {self._procs[name].returncode}")
            if probe():
                return
            time.sleep(0.1)
        raise ClusterError(f"{name}: {what} not reached within {self.startup_timeout_s:.0f} s")

    def _ok(self, *cmd: str, stdin: str | None = None, shell: str | None = None) -> bool:
        try:
            if shell is not None:
                r = subprocess.run(shell, shell=True, env=self.env, capture_output=True, text=True, timeout=10)
            else:
                r = subprocess.run(list(cmd), env=self.env, input=stdin, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    def _link_default_conf(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        if DEFAULT_CONF.is_symlink():  # a stale link of an earlier test cluster (checked by _acquire_machine)
            DEFAULT_CONF.unlink()
        DEFAULT_CONF.symlink_to(self.slurm_conf)
        self._linked = True

    def _unlink_default_conf(self) -> None:
        if self._linked and DEFAULT_CONF.is_symlink() and os.readlink(DEFAULT_CONF) == str(self.slurm_conf):
            DEFAULT_CONF.unlink()
        self._linked = False
        if self._made_etc_dir:
            try:
                DEFAULT_CONF.parent.rmdir()
            except OSError:
                pass
            self._made_etc_dir = False

    def _write_configs(self) -> None:
        for sub in ("etc", "munge", "db", "state", "spool", "log", "run", "dev"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        self.path("munge").chmod(0o755)
        self.ports = {name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self.db_password = secrets.token_hex(12)
        # Fake GPUs: gres/gpu wants a character device per GPU; aliases of /dev/null (1:3) serve.
        gpu_files = []
        for i in range(self.gpus):
            dev = self.path("dev", f"gpu{i}")
            try:
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
            except OSError:  # no CAP_MKNOD: a plain file works too (slurmd logs a complaint)
                dev.touch()
            gpu_files.append(str(dev))
        r = self.root
        self.slurm_conf.write_text(f"""\
# Written by tests/slurm_cluster.py; single node, everything under {r}
ClusterName={self.cluster_name}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ports['slurmctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports['slurmdbd']}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        # No cgroup.conf on purpose: with task/none and proctrack/linuxproc nothing reads it.
        self.path("etc", "gres.conf").write_text(
            "AutoDetect=off\n" + "".join(f"NodeName={self.node} Name=gpu File={f}\n" for f in gpu_files))
        dbd = self.path("etc", "slurmdbd.conf")
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports['slurmdbd']}
SlurmUser=root
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mariadb']}
StorageUser=slurm
StoragePass={self.db_password}
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)  # slurmdbd refuses a world-readable file with a password

    def _start_munge(self) -> None:
        key = self.path("munge", "munge.key")
        self.run("mungekey", "--create", "--keyfile", str(key))
        key.chmod(0o600)
        pidfile = self.path("run", "munged.pid")
        self._spawn("munged", [which("munged"), "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={pidfile}",
                               f"--log-file={self.path('log', 'munged.log')}",
                               f"--seed-file={self.path('munge', 'munged.seed')}"], pidfile)
        s = self.munge_socket
        self._wait("munged", lambda: self._ok(shell=f"munge -n --socket={s} | unmunge --socket={s}"),
                   "munge -n | unmunge")

    def _mariadb(self, sql: str) -> subprocess.CompletedProcess:
        return self.run("mariadb", "--no-defaults", f"--socket={self.path('db', 'mysqld.sock')}", "-uroot",
                        "-e", sql)

    def _start_mariadb(self) -> None:
        data = self.path("db", "data")
        self.run("mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db", timeout=120)
        pidfile = self.path("run", "mariadbd.pid")
        self._spawn("mariadbd", [which("mariadbd"), "--no-defaults", f"--datadir={data}",
                                 f"--socket={self.path('db', 'mysqld.sock')}", f"--port={self.ports['mariadb']}",
                                 "--bind-address=127.0.0.1", f"--pid-file={pidfile}", "--user=root",
                                 f"--log-error={self.path('log', 'mariadbd.log')}", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900"], pidfile)
        sock = self.path("db", "mysqld.sock")
        self._wait("mariadbd", lambda: self._ok("mariadb", "--no-defaults", f"--socket={sock}", "-uroot",
                                                "-e", "SELECT 1"), "SELECT 1")
        pw = self.db_password
        self._mariadb(
            "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
            + "".join(f"CREATE USER IF NOT EXISTS 'slurm'@'{h}' IDENTIFIED BY '{pw}'; "
                      f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{h}'; " for h in ("localhost", "127.0.0.1")))

    def _start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", [which("slurmdbd"), "-D"], self.path("run", "slurmdbd.pid"))
        self._wait("slurmdbd", lambda: self._ok("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"),
                   "sacctmgr answering")
        clusters = self.run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").stdout.split()
        if self.cluster_name not in clusters:
            # Before slurmctld starts, so that it registers into an existing cluster (and the root
            # account/user association exists for `sbatch -A root`).
            self.run("sacctmgr", "-i", "add", "cluster", self.cluster_name)

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", [which("slurmctld"), "-D"], self.path("run", "slurmctld.pid"))
        self._wait("slurmctld", lambda: "is UP" in self.run("scontrol", "ping", check=False).stdout,
                   "scontrol ping UP")

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [which("slurmd"), "-D", "-N", self.node], self.path("run", "slurmd.pid"))

        def idle() -> bool:
            states = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.split()
            return states == ["idle"]

        self._wait("slurmd", idle, f"node {self.node} idle in sinfo")


def main(argv: list[str]) -> int:
    """python tests/slurm_cluster.py [COMMAND ...]: start, sbatch `hostname` and check sacct (or run COMMAND
    with SLURM_CONF pointing at the cluster, e.g. `bash` for an interactive look), stop."""
    with SlurmCluster() as c:
        print(f"local SLURM started in {c.start_seconds:.1f} s under {c.root}", flush=True)
        if argv:
            return subprocess.run(argv, env=c.env).returncode
        job = c.run("sbatch", "--parsable", "--gpus=1", "-o", str(c.path("log", "job-%j.out")),
                    "--wrap", "hostname").stdout.strip()
        rows = []
        for _ in range(150):
            rows = [r for r in c.sacct() if r["JobID"] == job]
            if rows and rows[0]["State"] == "COMPLETED":
                break
            time.sleep(0.2)
        print(rows)
        print(c.path("log", f"job-{job}.out").read_text(), end="")
        return 0 if rows and rows[0]["State"] == "COMPLETED" else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
