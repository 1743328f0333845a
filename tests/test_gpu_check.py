"""`make gpu-check`'s dry mode: every check of benchmarks/gpu_check.py runs on the CPU against the CPU, so that the
GPU check cannot rot where no GPU is (its CUDA paths are the same code with another device)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402


def test_dry_mode_runs_every_check_and_passes(tmp_path):
    assert gpu_check.main(["--device", "cpu", "--geometry", "toy", "--tasks", "2", "--work-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    checks = [row["check"] for row in results["rows"]]
    assert [c.split(" ")[1] for c in checks if c.startswith("merge ")] == list(gpu_check.MERGES)
    for prefix in ("train ", "statistics gram", "statistics fisher", "decode ", "slurm "):
        assert any(c.startswith(prefix) for c in checks), prefix
    assert all(row["passed"] for row in results["rows"])
    assert all(row["difference"] == 0 for row in results["rows"] if row["difference"] is not None)  # CPU against CPU
    assert (tmp_path / "results.md").read_text().count("| pass |") == len(checks)


def test_a_dry_run_never_fills_the_page(tmp_path):
    page = tmp_path / "gpu-check.md"
    begin, end = gpu_check.DOC_MARKERS
    page.write_text(f"{begin}\n{end}\n")
    with pytest.raises(ValueError, match="dry mode"):
        gpu_check.write_doc({"device": "cpu", "rows": []}, page)


def test_difference_is_relative_and_catches_non_finite_values():
    import torch

    reference = {"a": torch.tensor([2.0, -4.0]), "b": torch.tensor([1.0])}
    assert gpu_check.relative_difference(reference, {"a": torch.tensor([2.0, -4.4]), "b": torch.tensor([1.0])}) \
        == pytest.approx(0.1)
    assert gpu_check.relative_difference(reference, {"a": torch.tensor([2.0, float("nan")]),
                                                     "b": torch.tensor([1.0])}) == float("inf")


def test_slurm_resources_of_the_checked_rule_come_from_the_profile():
    asked = gpu_check.slurm_resources(gpu_check.SLURM_RULE)
    assert asked["gpu"] == 1 and asked["mem_mb"] > 0 and asked["runtime"] > 0
    with pytest.raises(ValueError, match="no set-resources entry"):
        gpu_check.slurm_resources("no_such_rule")
