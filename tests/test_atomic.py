"""Atomic outputs: whole or nothing, readable as the umask allows, never over a folder that was not asked for."""

import os
import stat

import pytest
import torch

from asrmerge.atomic import FILE_MODE, FOLDER_MODE, UMASK, staged_file, staged_folder, write_json, write_text
from asrmerge.merging.checkpoint import save_tensors


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_get_the_umask_modes_not_private_ones(tmp_path):
    assert FILE_MODE == 0o666 & ~UMASK and FOLDER_MODE == 0o777 & ~UMASK
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "b.json", {"x": 1})
    save_tensors(tmp_path / "c.safetensors", {"w": torch.zeros(2)})
    with staged_folder(tmp_path / "model") as folder:
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").touch(mode=0o600)  # as transformers leaves its weights
    for name in ("a.txt", "b.json", "c.safetensors", "model/config.json", "model/model.safetensors"):
        assert _mode(tmp_path / name) == FILE_MODE, name
    assert _mode(tmp_path / "model") == FOLDER_MODE
    if UMASK & 0o044 == 0:
        assert _mode(tmp_path / "a.txt") & 0o044 == 0o044  # group and others can read


def test_a_failed_write_leaves_the_old_file_and_no_staging_file(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), staged_file(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_failed_folder_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), staged_folder(tmp_path / "model") as folder:
        (folder / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_replaced_only_when_asked_and_only_if_this_project_wrote_it(tmp_path):
    from asrmerge.guard import MARKER, OutputConflict

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for replace in (False, True):  # a folder of the user's is never replaced
        with pytest.raises(OutputConflict, match="mine holds files this project did not write"), \
                staged_folder(user, replace=replace):
            pass
    assert (user / "notes.txt").read_text() == "keep me"
    ours = tmp_path / "ours"
    with staged_folder(ours) as folder:
        (folder / "a.txt").write_text("a")
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "a.txt"]
    with pytest.raises(OutputConflict, match="pass --overwrite"), staged_folder(ours):
        pass
    with staged_folder(ours, replace=True) as folder:
        (folder / "b.txt").write_text("b")
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "b.txt"]
    (ours / "added.txt").write_text("the user's")
    with pytest.raises(OutputConflict, match="holds added.txt"), staged_folder(ours, replace=True):
        pass
    assert (ours / "added.txt").exists()


def test_staged_file_refuses_append_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), staged_file(tmp_path / "x", mode="a"):
        pass
