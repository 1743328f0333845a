"""The merge subcommands through `asrmerge.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from asrmerge.cli import main
from asrmerge.merging import get_method
from asrmerge.merging.cli import parse_params
from speech_world import task_vectors_by_command

ATTN = "model.encoder.layers.0.self_attn.q_proj.weight"


def test_task_vector_merge_export(tiny_whisper, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper
    tvs = task_vectors_by_command(base, finetuned, tmp_path)
    merged = tmp_path / "merged.safetensors"
    diag = tmp_path / "diag.json"
    argv = ["merge", "--method", "boosted_tsv_m", "--base", str(base), "--task-vectors", *map(str, tvs),
            "--out", str(merged), "--param", "beta=0.5", "--param", "energy=linear", "--param", "ns_steps=4",
            "--seed", "3", "--diagnostics", str(diag)]
    assert main(argv) == 0
    with safe_open(str(merged), framework="pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["params"])["beta"] == 0.5 and json.loads(meta["params"])["ns_steps"] == 4
    assert meta["seed"] == "3" and json.loads(diag.read_text())["method"] == "boosted_tsv_m"
    # the workflow's way to the same records: cached task spectra, then diagnose from files
    spectra = [tmp_path / f"tv{i}.spectra.json" for i in range(len(tvs))]
    for tv, path in zip(tvs, spectra):
        assert main(["task-spectra", "--task-vector", str(tv), "--out", str(path)]) == 0
    after = tmp_path / "after.json"
    assert main(["diagnose", "--merged", str(merged), "--task-vectors", *map(str, tvs), "--spectra",
                 *map(str, spectra), "--out", str(after)]) == 0
    during, from_files = json.loads(diag.read_text()), json.loads(after.read_text())
    assert from_files["tensors"].keys() == during["tensors"].keys()
    assert all(from_files["tensors"][n]["merged_singular_values"] == r["merged_singular_values"]
               for n, r in during["tensors"].items())
    assert main(["diagnose", "--merged", str(merged), "--task-vectors", *map(str, tvs), "--spectra",
                 str(spectra[0]), "--out", str(after)]) == 2
    out_dir = tmp_path / "model"
    assert main(["export", "--base", str(base), "--task-vector", str(merged), "--lambda", "1.5", "--out", str(out_dir)]) == 0
    exported = load_file(str(out_dir / "model.safetensors"))
    theta0 = load_file(str(base / "model.safetensors"))
    tau = load_file(str(merged))
    torch.testing.assert_close(exported[ATTN], theta0[ATTN] + 1.5 * tau[ATTN], rtol=0, atol=1e-6)


def test_merge_from_finetuned_with_bool_param(tiny_whisper, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper
    out = tmp_path / "m.safetensors"
    argv = ["merge", "--method", "model_stock", "--base", str(base), "--finetuned", *map(str, finetuned),
            "--out", str(out), "--param", "filter_wise=true"]
    assert main(argv) == 0 and out.is_file()


def test_methods_listing(capsys) -> None:
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in ("tsv_m", "boosted_tsv_m", "ties", "karcher", "dare", "consensus_ta"):
        assert name in text
    assert "--param density=0.2" in text and "reference:" in text
    assert main(["methods", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in table} >= {"iso_c", "iso_cts", "pcb", "sce", "star"}
    tsv = next(row for row in table if row["name"] == "tsv_m")
    assert tsv["params"]["orthogonaliser"]["default"] == "svd" and tsv["default_lambdas"][-1] == 3.0


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--method", "nope"], "unknown merge method 'nope'"),
        (["--method", "ties", "--param", "density=2"], "'density'=2.0 is out of range"),
        (["--method", "ties", "--param", "densty=0.3"], "unknown parameter 'densty'"),
        (["--method", "ties", "--param", "density"], "--param 'density' is not KEY=VALUE"),
        (["--method", "ties", "--param", "density=0.2", "--param", "density=0.3"], "--param 'density' is given twice"),
        (["--method", "tsv_m", "--param", "ns_steps=five"], "'ns_steps'='five' is not a int"),
    ],
)
def test_merge_errors_are_one_line(tiny_whisper, tmp_path: Path, capsys, extra, fragment) -> None:
    base, finetuned = tiny_whisper
    out = tmp_path / "m.safetensors"
    code = main(["merge", "--base", str(base), "--finetuned", str(finetuned[0]), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_inputs(tmp_path: Path, capsys) -> None:
    code = main(["task-vector", "--base", str(tmp_path / "a"), "--finetuned", str(tmp_path / "b"),
                 "--out", str(tmp_path / "tv.safetensors")])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_parse_params_kinds() -> None:
    method = get_method("boosted_tsv_m")
    params = parse_params(method, {"beta": "0.25", "ns_steps": "3", "orthogonaliser": "svd"})
    assert params["beta"] == 0.25 and params["ns_steps"] == 3 and params["orthogonaliser"] == "svd"
    assert parse_params(get_method("multislerp"), {"use_base": "false"})["use_base"] is False
    # a config's values are taken as they are, and checked the same way
    assert parse_params(method, {"beta": 0.25, "ns_steps": 3, "orthogonaliser": "svd"}) == params
    with pytest.raises(ValueError, match="'ns_steps'=2.5 is invalid"):
        parse_params(method, {"ns_steps": 2.5})


def test_merge_to_model_folder(tiny_whisper, tmp_path: Path, capsys) -> None:
    base, finetuned = tiny_whisper
    out_dir = tmp_path / "merged_model"
    argv = ["merge", "--method", "ties", "--base", str(base), "--finetuned", *map(str, finetuned),
            "--out-model", str(out_dir), "--lambda", "0.5"]
    assert main(argv) == 0
    tau = tmp_path / "tau.safetensors"
    assert main(argv[:-4] + ["--out", str(tau)]) == 0
    merged, theta0, t = (load_file(str(p)) for p in (out_dir / "model.safetensors", base / "model.safetensors", tau))
    assert torch.equal(merged[ATTN], theta0[ATTN] + 0.5 * t[ATTN])
    assert main(argv[:-4]) == 2 and "--out-model" in capsys.readouterr().err
    assert main(argv[:-4] + ["--out", str(tau), "--lambda", "2"]) == 2 and "needs --out-model" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_lambda_is_refused_before_anything_is_written(tiny_whisper, tmp_path: Path, capsys, value) -> None:
    base, finetuned = tiny_whisper
    argv = ["merge", "--method", "task_arithmetic", "--base", str(base), "--finetuned", *map(str, finetuned),
            "--out-model", str(tmp_path / "m"), f"--lambda={value}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "finite" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_output_model_folder_never_replaces_an_input_or_a_foreign_folder(tiny_whisper, tmp_path: Path, capsys) -> None:
    base, finetuned = tiny_whisper
    mine = tmp_path / "my_notes"
    mine.mkdir()
    (mine / "thesis.txt").write_text("irreplaceable")
    base_bytes = (base / "model.safetensors").read_bytes()
    common = ["merge", "--method", "task_arithmetic", "--base", str(base), "--finetuned", *map(str, finetuned)]
    for target in (mine, base, base.parent):
        assert main([*common, "--out-model", str(target), "--lambda", "0.5"]) == 2
        assert "output" in capsys.readouterr().err
    assert (mine / "thesis.txt").read_text() == "irreplaceable" and (base / "model.safetensors").read_bytes() == base_bytes
    ours = tmp_path / "merged"
    assert main([*common, "--out-model", str(ours), "--lambda", "0.5"]) == 0
    assert main([*common, "--out-model", str(ours), "--lambda", "0.3"]) == 2  # its own earlier output: not silently
    assert "pass --overwrite" in capsys.readouterr().err
    assert main([*common, "--out-model", str(ours), "--lambda", "0.3", "--overwrite"]) == 0  # replaced when asked
    assert main([*common, "--out-model", str(ours), "--lambda", "0.3"]) == 2  # that approval ended with its command
    assert "pass --overwrite" in capsys.readouterr().err
    (ours / "notes.txt").write_text("mine")
    assert main([*common, "--out-model", str(ours), "--lambda", "0.3", "--overwrite"]) == 2  # never over added files
    assert "holds notes.txt, which this project did not write" in capsys.readouterr().err
    (ours / "notes.txt").unlink()
    # a merged model used as an input is never replaced by the output of the merge that reads it
    merged_bytes = (ours / "model.safetensors").read_bytes()
    again = ["merge", "--method", "task_arithmetic", "--base", str(base), "--finetuned", str(ours), str(finetuned[0])]
    assert main([*again, "--out-model", str(ours), "--lambda", "0.5"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert (ours / "model.safetensors").read_bytes() == merged_bytes
