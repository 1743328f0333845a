"""Provenance checked by every consumer: a task vector is applied only to the base it was made from (merge, export,
decode, select-lambda), a "fine-tune" with the base's weights is refused, and content fingerprints ignore file
layout but see any change of a weight."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from asrmerge.cli import main
from asrmerge.merging import open_checkpoint
from speech_world import task_vectors_by_command


@pytest.fixture(scope="module")
def world(tiny_whisper_factory, tmp_path_factory):
    """A base, two fine-tunes, a second base of the same shape (another training: the first fine-tune's weights),
    task vectors against the first base, and a validation/test manifest."""
    base, finetuned = tiny_whisper_factory(num_finetuned=3)
    root = tmp_path_factory.mktemp("provenance")
    taus = task_vectors_by_command(base, finetuned[1:], root)
    return {"base": base, "other_base": finetuned[0], "finetuned": finetuned[1:], "taus": taus, "root": root}


def consumers(w: dict, base: Path, out: Path) -> list[list[str]]:
    """Every command that applies or merges the task vectors onto `base`."""
    taus = [str(t) for t in w["taus"]]
    manifest = w["root"] / "m.jsonl"
    manifest.write_text("")
    return [
        ["merge", "--method", "task_arithmetic", "--base", str(base), "--task-vectors", *taus, "--out", str(out / "m")],
        ["export", "--base", str(base), "--task-vector", taus[0], "--lambda", "0.5", "--out", str(out / "e")],
        ["select-lambda", "--base", str(base), "--task-vector", taus[0], "--validation", str(manifest),
         "--lambdas", "0.5", "--out", str(out / "s.json")],
        ["decode", "--model", str(base), "--task-vector", taus[0], "--selection", str(out / "none.json"),
         "--test-set", f"a={manifest}", "--out-dir", str(out / "hyp")],
    ]


def test_task_vectors_are_refused_on_another_base_of_the_same_shape(world, tmp_path, capsys):
    for command in consumers(world, world["other_base"], tmp_path):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "was made from another base" in err and str(world["other_base"]) in err, (command, err)
    assert not any(tmp_path.iterdir()) or {p.name for p in tmp_path.iterdir()} <= {"hyp"}
    # on their own base they are accepted (the merge and export run)
    assert main(consumers(world, world["base"], tmp_path)[0]) == 0
    assert main(consumers(world, world["base"], tmp_path)[1]) == 0


def test_a_fine_tune_with_the_base_weights_is_refused(world, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(world["base"], copy)
    assert main(["task-vector", "--base", str(world["base"]), "--finetuned", str(copy),
                 "--out", str(tmp_path / "t.safetensors")]) == 2
    assert "has the weights of the base" in capsys.readouterr().err
    assert not (tmp_path / "t.safetensors").exists()
    assert main(["merge", "--method", "ties", "--base", str(world["base"]), "--finetuned", str(copy),
                 str(world["finetuned"][0]), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "has the weights of the base" in capsys.readouterr().err


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensor_index=st.integers(0, 10_000), element=st.integers(0, 10_000), delta=st.sampled_from([1e-3, -0.5, 7.0]))
def test_a_changed_weight_changes_the_fingerprint_and_the_layout_does_not(world, tmp_path_factory, tensor_index,
                                                                          element, delta):
    """Any one weight changed, anywhere, changes the fingerprint of a small model (every byte of a tensor up to
    FINGERPRINT_SAMPLES x FINGERPRINT_BYTES is read); the same tensors in another file (new metadata, another
    order) keep it."""
    folder = tmp_path_factory.mktemp("fp")
    tensors = load_file(str(world["base"] / "model.safetensors"))
    with open_checkpoint(world["base"]) as ckpt:
        original = ckpt.fingerprint
    relaid = dict(reversed(list(tensors.items())))
    save_file(relaid, str(folder / "relaid.safetensors"), metadata={"format": "pt", "note": "another layout"})
    with open_checkpoint(folder / "relaid.safetensors") as ckpt:
        assert ckpt.fingerprint == original
    floats = [name for name, t in tensors.items() if t.is_floating_point()]
    name = floats[tensor_index % len(floats)]
    changed = tensors[name].clone().view(-1)
    changed[element % changed.numel()] += delta
    save_file({**tensors, name: changed.view(tensors[name].shape)}, str(folder / "changed.safetensors"))
    with open_checkpoint(folder / "changed.safetensors") as ckpt:
        assert ckpt.fingerprint != original
    assert torch.equal(load_file(str(world["base"] / "model.safetensors"))[name], tensors[name])
