"""One run per results folder: the run that starts on a folder takes its lock (layout.RESULTS_LOCK) and marks it as
a results folder of this project (layout.RESULTS_MARKER); a second run on the same folder, from any working
directory, is refused while the first holds it, so no run deletes another's outputs. A lock whose process is gone
(same host) is taken over, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from asrmerge import layout

log = logging.getLogger(__name__)


class ResultsInUse(RuntimeError):
    """Another run holds the results folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "workdir": str(Path.cwd()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def acquire(results: str | os.PathLike[str]) -> Path:
    """Take the results folder's lock (creating the folder), or raise ResultsInUse naming the run that holds it."""
    folder = Path(results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.RESULTS_MARKER).touch()
    lock = folder / layout.RESULTS_LOCK
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
                log.warning("results folder %s: taking over the lock of a run that is gone (%s)", folder, holder)
                lock.unlink(missing_ok=True)
                continue
            raise ResultsInUse(
                f"results folder {folder} is in use by another run (from {holder.get('workdir', '?')}, process "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it "
                f"to finish, or remove {lock} if that run is gone") from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(_holder(), handle)
        return lock
    raise ResultsInUse(f"results folder {folder}: could not take its lock {lock}")


def release(results: str | os.PathLike[str]) -> None:
    """Give the lock back if this process holds it."""
    lock = Path(results) / layout.RESULTS_LOCK
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)
