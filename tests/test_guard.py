"""The output guard (asrmerge.guard), generated: every way an output can alias an input (the same path, a symlink, a
hard link, a path inside an input folder, a folder holding an input) is refused before any work and leaves every
file as it was; a free path is accepted; and every `asrmerge` command that writes declares its paths."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrmerge.cli import build_parser, main
from asrmerge.guard import MARKER, OutputConflict, check_outputs
from asrmerge.workflow.stage import GUARD_ROLES, Folder, stages
from speech_world import task_vectors_by_command

ALIASES = ("same", "symlink", "hardlink", "inside_input_folder", "holds_input", "free", "free_beside")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _layout(root: Path, depth: int) -> tuple[Path, Path]:
    """An input folder `depth` levels down holding a weights file; returns (folder, file)."""
    folder = root.joinpath(*[f"level{i}" for i in range(depth)], "model")
    folder.mkdir(parents=True)
    weights = folder / "model.safetensors"
    weights.write_bytes(b"weights")
    return folder, weights


def _output(root: Path, folder: Path, weights: Path, alias: str) -> Path:
    """An output path that aliases the inputs as `alias` says (or is free)."""
    if alias == "same":
        return weights
    if alias == "symlink":
        link = root / "link.safetensors"
        link.symlink_to(weights)
        return link
    if alias == "hardlink":
        link = root / "hard.safetensors"
        os.link(weights, link)
        return link
    if alias == "inside_input_folder":
        return folder / "tau.safetensors"
    if alias == "holds_input":
        return folder.parent
    if alias == "free":
        return root / "out" / "tau.safetensors"
    return root / "tau.safetensors"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(alias=st.sampled_from(ALIASES), depth=st.integers(0, 3), give_folder=st.booleans())
def test_every_alias_of_an_input_is_refused_and_a_free_path_accepted(tmp_path_factory, alias, depth, give_folder):
    root = tmp_path_factory.mktemp("guard")
    folder, weights = _layout(root, depth)
    out = _output(root, folder, weights, alias)
    given_input = folder if give_folder else weights
    before = _snapshot(root)
    conflict = alias in ("same", "symlink", "hardlink", "holds_input") or (alias == "inside_input_folder" and give_folder)
    if alias == "inside_input_folder" and not give_folder:
        conflict = False  # a file beside a file input is a free path
    if conflict:
        with pytest.raises(OutputConflict, match="output"):
            check_outputs([given_input], [out])
    else:
        check_outputs([given_input], [out])
    assert _snapshot(root) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.sampled_from(["a.json", "b.bin", "sub/c.txt"]), min_size=1, max_size=3, unique=True),
       added=st.booleans(), overwrite=st.booleans(), marked=st.booleans())
def test_a_folder_output_replaces_only_an_unchanged_earlier_output_when_asked(tmp_path_factory, files, added,
                                                                             overwrite, marked):
    from asrmerge.guard import mark_folder

    folder = tmp_path_factory.mktemp("out")
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    if marked:
        mark_folder(folder)
    if added:
        (folder / "notes.txt").write_text("the user's")
    allowed = marked and not added and overwrite
    if allowed:
        check_outputs([], [], [folder], overwrite=overwrite)
    else:
        with pytest.raises(OutputConflict, match=str(folder.name)):
            check_outputs([], [], [folder], overwrite=overwrite)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


#: Arguments that name files or folders, by the words their help or metavar uses.
_PATH_WORDS = ("folder", "file", "manifest", "dir", "path", "out", "task-vector", "report", "spec", "statistics",
               "hypotheses", "selection", "base", "model", "source", "finetuned", "merged", "spectra", "test-set",
               "validation", "train", "replay", "screenshots", "diagnostics")
#: Commands that read their paths from the config (`--configfile`) or only read (compare-runs, validate-manifest).
_CONFIG_OR_READ_ONLY = {"compare-runs", "validate-manifest", "methods"}


def test_every_command_that_takes_paths_declares_them_for_the_guard():
    for name, sub in _subcommands().items():
        roles = sub.get_default("path_roles")
        path_args = [a.dest for a in sub._actions if a.option_strings and any(
            word in " ".join(a.option_strings) for word in _PATH_WORDS)] + [
            a.dest for a in sub._actions if not a.option_strings and a.dest not in ("help",) and name != "figure"]
        path_args = [d for d in path_args if d not in ("overwrite", "configfile", "help", "lambdas", "kind", "json",
                                                       "no_audio", "dtype", "device", "method", "seed", "sample_rate",
                                                       "set_name", "names", "chromium", "packages")]
        if name in _CONFIG_OR_READ_ONLY:
            continue
        if name in stages():  # a declared stage: the guard's role of each path comes from its marker
            arguments = stages()[name].arguments
            roles = {"paths": [a.name for a in arguments if type(a.marker) in GUARD_ROLES],
                     "folders": [a.name for a in arguments if isinstance(a.marker, Folder)]}
        assert roles is not None, f"asrmerge {name} does not declare its paths (asrmerge.guard.declare_paths)"
        declared = {d for group in roles.values() for d in group}
        missing = sorted(set(path_args) - declared)
        assert not missing, f"asrmerge {name}: path arguments not declared for the output guard: {missing}"
        if roles.get("folders"):
            assert "overwrite" in {a.dest for a in sub._actions}, name


@pytest.fixture(scope="module")
def artefacts(tiny_whisper_factory, tmp_path_factory):
    """A base, two fine-tunes, their task vectors and a user's manifest folder."""
    base, finetuned = tiny_whisper_factory(num_finetuned=2)
    root = tmp_path_factory.mktemp("artefacts")
    taus = task_vectors_by_command(base, finetuned, root)
    data = root / "mydata"
    data.mkdir()
    (data / "manifest.jsonl").write_text('{"id": "a"}\n')
    return {"base": base, "finetuned": finetuned, "taus": taus, "data": data, "root": root}


def _aliasing_commands(a: dict) -> list[list[str]]:
    """Commands whose output lands on one of their inputs (the cases that used to destroy the user's files)."""
    base, ft, taus = str(a["base"]), [str(f) for f in a["finetuned"]], [str(t) for t in a["taus"]]
    merge = ["merge", "--method", "task_arithmetic", "--base", base, "--task-vectors", *taus]
    return [
        ["task-vector", "--base", base, "--finetuned", ft[0], "--out", f"{ft[0]}/model.safetensors"],
        ["task-vector", "--base", base, "--finetuned", ft[0], "--out", f"{base}/model.safetensors"],
        [*merge, "--out", taus[0]],
        [*merge, "--out", str(a["root"] / "m.safetensors"), "--diagnostics", taus[1]],
        [*merge, "--out-model", base],
        [*merge, "--out-model", str(Path(base).parent)],
        ["task-spectra", "--task-vector", taus[0], "--out", taus[0]],
        ["export", "--base", base, "--task-vector", taus[0], "--lambda", "0.5", "--out", base],
        ["export", "--base", base, "--task-vector", taus[0], "--lambda", "0.5", "--out", ft[1]],
        ["decode", "--model", base, "--test-set", f"a={a['data']}/manifest.jsonl", "--out-dir", str(a["data"])],
        ["score", "--hypotheses", f"a={a['data']}/manifest.jsonl", "--out", f"{a['data']}/manifest.jsonl"],
    ]


def test_commands_never_write_over_their_inputs(artefacts, capsys):
    watched = [artefacts["base"].parent, artefacts["root"]]
    before = [_snapshot(folder) for folder in watched]
    for command in _aliasing_commands(artefacts):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error: output" in err, (command, err)
    assert [_snapshot(folder) for folder in watched] == before
    assert not (artefacts["base"] / MARKER).exists()
