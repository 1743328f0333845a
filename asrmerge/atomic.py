"""Atomic outputs: every file and folder asrmerge writes appears whole or not at all.

Each writer stages its output next to the destination (a hidden sibling, so the rename stays on one file system),
then replaces the destination with one `os.replace`; on any error, an interrupt included, the staged copy is removed
and the destination is left as it was. Staged files get the permissions a plain `open()` would give (0666, 0777 for
folders, less the process umask), so results on a shared file system stay readable by the group: `tempfile`
creates them private (0600/0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from asrmerge.guard import MARKER, check_replaceable, mark_folder


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process umask, read once at import (reading it means setting it, which is not thread-safe later).
UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
FOLDER_MODE = 0o777 & ~UMASK


def _staging_name(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def staged_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that takes a file name (torch.save, savefig, to_csv);
    it replaces `path` when the block ends without error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_staging_name(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    try:
        yield staged
        os.chmod(staged, FILE_MODE)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str], mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Yield an open file beside `path` (`mode` "w" or "wb"); flushed to disk and moved over `path` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"staged_file writes new files only (mode 'w' or 'wb'), got {mode!r}")
    if mode == "w":
        open_args.setdefault("encoding", "utf-8")
    with staged_path(path) as staged, open(staged, mode, **open_args) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with staged_file(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], payload: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(payload, indent=indent))


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it takes the place of `path`, marked as written by
    this project (asrmerge.guard.MARKER lists its files).

    An existing non-empty `path` is replaced only when this project wrote it, nothing was added since, and `replace`
    is set (asrmerge.guard.check_replaceable); otherwise OutputConflict before anything is written.
    """
    target = Path(path)
    check_replaceable(target, replace)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=_staging_name(target), dir=target.parent))
    try:
        yield staged
        # Libraries that wrote into it may have used private temporary files (transformers' weights come out 0600).
        for root, folders, files in os.walk(staged):
            for name in folders:
                os.chmod(os.path.join(root, name), FOLDER_MODE)
            for name in files:
                os.chmod(os.path.join(root, name), FILE_MODE)
        mark_folder(staged)
        os.chmod(staged / MARKER, FILE_MODE)
        os.chmod(staged, FOLDER_MODE)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged)


def write_section(path: str | os.PathLike[str], markers: tuple[str, str], body: str) -> Path:
    """Replace what lies between the one `begin` line and the one `end` line (`markers`) of the text file `path` with
    `body`, atomically, keeping the rest: a generated section of a hand-written page. ValueError naming the file when
    a marker is missing or repeated."""
    begin, end = markers
    text = Path(path).read_text(encoding="utf-8")
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{path} needs one {begin} and one {end} line around the section it receives")
    before, rest = text.split(begin)
    _, after = rest.split(end)
    return write_text(path, f"{before}{begin}\n{body}{end}{after}")
