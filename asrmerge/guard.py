"""The output guard: nothing asrmerge writes lands on an input, inside an input folder, or over a folder that holds
files this project did not write. Every `asrmerge` command (asrmerge.cli, from the paths each declares with
`declare_paths`; a declared stage's from its declaration, paths derived from the run's config included:
asrmerge.workflow.stage) and every rule's job (asrmerge.workflow.jobs.job_logging, from the rule's inputs and
outputs) runs `check_outputs` before any work.

Folders the project writes whole (model folders, corpus sets) carry MARKER, the list of the files written there
(asrmerge.atomic.staged_folder writes it): only such a folder may be replaced, only with an explicit overwrite, and
never while it holds a file that is not on its list (a file the user added).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MARKER = ".asrmerge-folder"

#: Folders an `asrmerge` command was told to replace (--overwrite), after the guard checked them: the writers deep in
#: a stage (training, model saving) consult it instead of taking the flag through every call.
_REPLACE_APPROVED: set[Path] = set()

PathLike = str | os.PathLike[str]


class OutputConflict(ValueError):
    """An output that would destroy an input or a folder the project did not write."""


def _paths(values: Any) -> list[Path]:
    """Paths from an argument value, a list of them or a Snakemake named list (None and "" skipped)."""
    if values is None or values == "":
        return []
    if isinstance(values, (str, os.PathLike)):
        return [Path(values).expanduser()]
    return [path for value in values for path in _paths(value)]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file or folder, symlinks followed: one identity for every name of it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies inside it, symlinks resolved."""
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def written_files(folder: Path) -> list[str]:
    """The files (paths relative to `folder`) a project-written folder holds, MARKER excluded, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MARKER)


def mark_folder(folder: Path) -> None:
    """Record the files of `folder` as written by this project (called on the staged folder, before it moves)."""
    (folder / MARKER).write_text(json.dumps({"files": written_files(folder)}, indent=1) + "\n", encoding="utf-8")


def check_replaceable(folder: Path, overwrite: bool) -> None:
    """An existing non-empty `folder` may be replaced only when this project wrote it, nothing was added to it
    since, and `overwrite` is set (or the running command was given --overwrite for it); otherwise OutputConflict
    naming the folder (and the foreign file)."""
    folder = Path(folder)
    overwrite = overwrite or folder.resolve() in _REPLACE_APPROVED
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputConflict(f"output folder {folder} is an existing file")
    present = written_files(folder)
    if not present and not (folder / MARKER).exists():
        return
    try:
        recorded = set(json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputConflict(f"output folder {folder} holds files this project did not write (e.g. {present[0]}); "
                             "choose a new folder") from None
    foreign = [name for name in present if name not in recorded]
    if foreign:
        raise OutputConflict(f"output folder {folder} holds {foreign[0]}, which this project did not write; move it "
                             "or choose a new folder (nothing was replaced)")
    if not overwrite:
        raise OutputConflict(f"output folder {folder} holds an earlier output; pass --overwrite to replace it")


def check_outputs(inputs: Iterable[Any], outputs: Iterable[Any], folders: Iterable[Any] = (),
                  overwrite: bool = False) -> None:
    """Refuse, before any work, an output (file or folder) that is an input (same path, a symlink to it or a hard
    link of it), lies inside an input folder or holds an input; and a folder output (`folders`, written whole) that
    may not be replaced (`check_replaceable`)."""
    ins, outs = _paths(list(inputs)), _paths(list(outputs))
    folder_outputs = _paths(list(folders))
    # every name of every input file: an input folder's files included (a hard link to one is that file)
    identities = {_identity(path): given for given in ins
                  for path in ([given, *given.rglob("*")] if given.is_dir() else [given])}
    identities.pop(None, None)
    for out in outs + folder_outputs:
        identity = _identity(out)
        if identity in identities:
            raise OutputConflict(f"output {out} is the input {identities[identity]} (or a file of it): choose "
                                 "another output")
        for given in ins:
            if given.is_dir() and _within(out, given):
                raise OutputConflict(f"output {out} lies inside the input folder {given}: choose another output")
            if _within(given, out):
                raise OutputConflict(f"output {out} holds the input {given}: choose another output")
    for folder in folder_outputs:
        check_replaceable(folder, overwrite)


def end_command() -> None:
    """Forget the running command's --overwrite approvals (asrmerge.cli.main calls it when the command ends)."""
    _REPLACE_APPROVED.clear()


def declare_paths(parser: argparse.ArgumentParser, *, inputs: Iterable[str] = (), outputs: Iterable[str] = (),
                  folders: Iterable[str] = (), pairs: Iterable[str] = ()) -> None:
    """Name a command's path arguments by destination: `inputs`, `outputs` (files, or folders written into),
    `folders` (folders written whole; such a command takes --overwrite) and `pairs` (NAME=PATH inputs). The output
    guard (`check_command`) reads them from the parsed arguments."""
    roles = {"inputs": tuple(inputs), "outputs": tuple(outputs), "folders": tuple(folders), "pairs": tuple(pairs)}
    parser.set_defaults(path_roles=roles)
    if roles["folders"]:
        overwrite_argument(parser)


def overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """--overwrite, of a command that writes a folder whole (`check_replaceable`)."""
    if "--overwrite" not in parser._option_string_actions:
        parser.add_argument("--overwrite", action="store_true",
                            help="replace an earlier output of this project in the output folder")


def check_command(args: argparse.Namespace) -> None:
    """The output guard for a parsed `asrmerge` command (its `declare_paths` roles)."""
    _REPLACE_APPROVED.clear()  # an approval holds for the command that was given --overwrite, no other
    roles: Mapping[str, tuple[str, ...]] | None = getattr(args, "path_roles", None)
    if not roles:
        return
    inputs = [getattr(args, dest) for dest in roles["inputs"]]
    inputs += [value.partition("=")[2] for dest in roles["pairs"] for value in getattr(args, dest) or []]
    check_paths(inputs, [getattr(args, dest) for dest in roles["outputs"]],
                [getattr(args, dest) for dest in roles["folders"]], overwrite=getattr(args, "overwrite", False))


def check_paths(inputs: Iterable[Any], outputs: Iterable[Any], folders: Iterable[Any], overwrite: bool) -> None:
    """A command's paths through `check_outputs`; with `overwrite`, its folders are approved for replacement until
    the command ends."""
    folders = list(folders)
    check_outputs(inputs, outputs, folders, overwrite=overwrite)
    if overwrite:
        _REPLACE_APPROVED.update(path.resolve() for path in _paths(folders))
