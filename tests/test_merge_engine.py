"""Streaming engine: checkpoint I/O, task vectors, merge, export, validation, determinism, diagnostics."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from asrmerge.merging import (
    DEFAULT_SVD_EXCLUDE,
    compute_task_vector,
    export_merged_model,
    get_method,
    merge,
    open_checkpoint,
    resolve_params,
)
from asrmerge.guard import MARKER
from asrmerge.merging.checkpoint import SafetensorsWriter, TensorEntry, save_tensors
from asrmerge.merging.engine import tensor_generator, tensor_seed
from asrmerge.merging.linalg import streaming_order_statistics
from asrmerge.merging.methods.subspace import tsv_m

ATTN = "model.encoder.layers.0.self_attn.q_proj.weight"
CONV = "model.encoder.conv1.weight"
TOKENS = "model.decoder.embed_tokens.weight"
FROZEN = "model.encoder.embed_positions.weight"


def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.fixture(scope="module")
def task_vector_files(tiny_whisper, tmp_path_factory) -> list[Path]:
    base, finetuned = tiny_whisper
    out = tmp_path_factory.mktemp("tv")
    return [compute_task_vector(base, ft, out / f"tv{i}.safetensors") for i, ft in enumerate(finetuned)]


# ------------------------------------------------------------------------------------------------ checkpoint I/O


def test_writer_roundtrip_all_dtypes(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.randn(2, 2, 2).half(),
        "d": torch.tensor(3.0, dtype=torch.float64),
        "e": torch.zeros(0, 3),
        "f": torch.arange(5),
    }
    path = save_tensors(tmp_path / "x.safetensors", tensors, {"format": "pt", "note": "hi"})
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt", "note": "hi"}
        for name, tensor in tensors.items():
            got = fh.get_tensor(name)
            assert got.dtype == tensor.dtype and torch.equal(got, tensor)
    assert os.listdir(tmp_path) == ["x.safetensors"]


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    entries = [TensorEntry("a", torch.float32, (2,)), TensorEntry("b", torch.float32, (2,))]
    with pytest.raises(RuntimeError):
        with SafetensorsWriter(target, entries) as writer:
            writer.write("a", torch.ones(2))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="never written"):
        with SafetensorsWriter(target, entries) as writer:
            writer.write("a", torch.ones(2))
    with pytest.raises(ValueError, match="declared"):
        with SafetensorsWriter(target, entries) as writer:
            writer.write("a", torch.ones(3))
    assert os.listdir(tmp_path) == []


def test_open_sharded_folder(tmp_path: Path) -> None:
    save_file({"x": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"y": torch.zeros(3, 1).half()}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.names == ["x", "y"] and ckpt.model_type == "whisper"
    assert ckpt.shapes["y"] == (3, 1) and ckpt.dtypes["y"] == torch.float16
    assert torch.equal(ckpt.get_float("y"), torch.zeros(3, 1))


def test_missing_checkpoint_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        open_checkpoint(tmp_path)  # empty folder


# ------------------------------------------------------------------------------------------------- task vectors


def test_compute_task_vector(tiny_whisper, task_vector_files) -> None:
    base, finetuned = tiny_whisper
    theta0 = _load(base / "model.safetensors")
    theta1 = _load(finetuned[0] / "model.safetensors")
    tau = _load(task_vector_files[0])
    assert set(tau) == set(theta0)
    for name in theta0:
        assert tau[name].dtype == torch.float32
        assert torch.equal(tau[name], theta1[name].float() - theta0[name].float())
    assert torch.count_nonzero(tau[FROZEN]) == 0  # frozen sinusoidal table: τ = 0
    with safe_open(str(task_vector_files[0]), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["kind"] == "task_vector" and meta["base"] == str(base) and meta["finetuned"] == str(finetuned[0])


def test_merge_from_finetuned_equals_from_task_vectors(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper
    a = merge(base, finetuned=finetuned, method="task_arithmetic", params={}, out_path=tmp_path / "a.safetensors")
    b = merge(base, task_vectors=task_vector_files, method="task_arithmetic", params={}, out_path=tmp_path / "b.safetensors")
    ta, tb = _load(a), _load(b)
    taus = [_load(p) for p in task_vector_files]
    for name in ta:
        assert torch.equal(ta[name], tb[name])
        torch.testing.assert_close(ta[name], sum(t[name] for t in taus), rtol=1e-6, atol=1e-7)
    with safe_open(str(a), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["method"] == "task_arithmetic" and json.loads(meta["default_lambdas"])[-1] == 1.0


def test_subspace_merge_routes_non_matrices_and_embeddings_to_mean(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    base, _ = tiny_whisper
    out = merge(base, task_vectors=task_vector_files, method="tsv_m", params={}, out_path=tmp_path / "m.safetensors")
    merged = _load(out)
    taus = torch.stack([_load(p)[ATTN] for p in task_vector_files])
    torch.testing.assert_close(merged[ATTN], tsv_m(taus, torch.zeros(16, 16)), rtol=1e-5, atol=1e-6)
    for name in (CONV, TOKENS, FROZEN, "model.encoder.layers.0.fc1.bias"):
        stack = torch.stack([_load(p)[name] for p in task_vector_files])
        torch.testing.assert_close(merged[name], stack.mean(dim=0), rtol=1e-6, atol=1e-7)
    assert torch.count_nonzero(merged[FROZEN]) == 0
    # without exclusions the token embedding goes through the SVD path
    out2 = merge(base, task_vectors=task_vector_files, method="tsv_m", params={}, out_path=tmp_path / "n.safetensors",
                 exclude_from_svd=())
    stack = torch.stack([_load(p)[TOKENS] for p in task_vector_files])
    assert not torch.allclose(_load(out2)[TOKENS], stack.mean(dim=0))
    assert DEFAULT_SVD_EXCLUDE == ("embed_tokens", "embed_positions", "proj_out")


def test_half_precision_checkpoints(tiny_whisper_factory, tmp_path: Path) -> None:
    for dtype in (torch.float16, torch.bfloat16):
        base, finetuned = tiny_whisper_factory(2, dtype)
        out = merge(base, finetuned=finetuned, method="boosted_tsv_m", params={}, out_path=tmp_path / f"{dtype}.safetensors")
        merged = _load(out)
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in merged.values())
        model_dir = export_merged_model(base, out, 0.5, tmp_path / f"export_{str(dtype)[6:]}")
        exported = _load(model_dir / "model.safetensors")
        assert exported[ATTN].dtype == dtype


def test_float64_checkpoints_are_announced_as_merged_in_float32(tmp_path: Path, caplog) -> None:
    from safetensors.torch import save_file

    from asrmerge.merging.checkpoint import open_checkpoint

    save_file({"w": torch.zeros(2, 2, dtype=torch.float64), "b": torch.zeros(2)}, tmp_path / "wide.safetensors")
    with caplog.at_level("WARNING"):
        ckpt = open_checkpoint(tmp_path / "wide.safetensors")
    assert ckpt.dtypes["w"] == torch.float64
    assert "1 float64 tensor(s) (e.g. w) are read in float32" in caplog.text


def test_seeded_merge_is_bitwise_reproducible(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    base, _ = tiny_whisper
    paths = [
        merge(base, task_vectors=task_vector_files, method="dare", params={"p": 0.5}, out_path=tmp_path / f"{i}.safetensors",
              seed=seed)
        for i, seed in enumerate((7, 7, 8))
    ]
    blobs = [p.read_bytes() for p in paths]
    assert blobs[0] == blobs[1]
    assert blobs[0] != blobs[2]
    # per-tensor generators depend only on (seed, name)
    assert tensor_seed(7, ATTN) == tensor_seed(7, ATTN) != tensor_seed(7, CONV)
    a = torch.rand(4, generator=tensor_generator(7, ATTN))
    torch.rand(100, generator=tensor_generator(7, CONV))
    assert torch.equal(a, torch.rand(4, generator=tensor_generator(7, ATTN)))


# ---------------------------------------------------------------------------------------------------- validation


def _corrupt_copy(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    tensors = _load(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_shape_mismatch_names_key_and_file(tiny_whisper, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper
    bad = _corrupt_copy(finetuned[0], tmp_path / "bad", lambda t: t.__setitem__(ATTN, torch.zeros(16, 8)))
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=r"q_proj\.weight.*bad"):
        merge(base, finetuned=[finetuned[1], bad], method="task_arithmetic", out_path=out)
    assert not out.exists()
    missing = _corrupt_copy(finetuned[0], tmp_path / "missing", lambda t: t.pop(ATTN))
    with pytest.raises(ValueError, match="missing"):
        compute_task_vector(base, missing, tmp_path / "tv.safetensors")


def test_nan_names_tensor_and_file_and_writes_nothing(tiny_whisper, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper

    def poison(tensors):
        tensors[CONV] = tensors[CONV].clone()
        tensors[CONV][0, 0, 0] = float("nan")

    bad = _corrupt_copy(finetuned[0], tmp_path / "nan", poison)
    out = tmp_path / "tv.safetensors"
    with pytest.raises(ValueError, match=r"conv1\.weight.*nan.*NaN"):
        compute_task_vector(base, bad, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_model_type_mismatch(tiny_whisper, tmp_path: Path) -> None:
    import shutil

    base, finetuned = tiny_whisper
    other = tmp_path / "other"
    shutil.copytree(finetuned[0], other)
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "wav2vec2"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type"):
        merge(base, finetuned=[other], method="model_soup", out_path=tmp_path / "m.safetensors")


def test_merge_argument_errors(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper
    out = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="exactly one"):
        merge(base, finetuned=finetuned, task_vectors=task_vector_files, method="ties", out_path=out)
    with pytest.raises(ValueError, match="unknown merge method"):
        merge(base, finetuned=finetuned, method="nope", out_path=out)
    with pytest.raises(ValueError, match="density"):
        merge(base, finetuned=finetuned, method="ties", params={"density": 0}, out_path=out)
    exported = export_merged_model(base, task_vector_files[0], 1.0, tmp_path / "exported")
    with pytest.raises(ValueError, match="not a task-vector file"):
        merge(base, task_vectors=[exported / "model.safetensors"], method="ties", out_path=out)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------- export


def test_export_loads_with_transformers(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    base, _ = tiny_whisper
    merged = merge(base, task_vectors=task_vector_files, method="ties", params={}, out_path=tmp_path / "m.safetensors")
    (base / ".snakemake_timestamp").touch()  # a workflow's model folder: its hidden files are not the model's
    out_dir = export_merged_model(base, merged, 0.7, tmp_path / "export", provenance={"method": "ties"})
    (base / ".snakemake_timestamp").unlink()
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "model.safetensors"} <= set(os.listdir(out_dir))
    assert [name for name in os.listdir(out_dir) if name.startswith(".")] == [MARKER]  # its own record only
    info = json.loads((out_dir / "merge_info.json").read_text())
    assert info["method"] == "ties" and info["lambda"] == 0.7
    assert info["sha256"]["model.safetensors"] == hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    model = WhisperForConditionalGeneration.from_pretrained(out_dir)
    theta0 = _load(base / "model.safetensors")
    tau = _load(merged)
    state = model.state_dict()
    for name in (ATTN, CONV, TOKENS):
        torch.testing.assert_close(state[name], theta0[name] + 0.7 * tau[name], rtol=0, atol=1e-6)
    assert torch.equal(state["proj_out.weight"], state[TOKENS])  # tied weights survive
    features = torch.randn(1, 8, 40)
    with torch.no_grad():
        ids = model.generate(features, max_new_tokens=3)
    assert ids.shape[0] == 1
    # λ = 0 reproduces the base exactly; re-export over an earlier export replaces it when asked
    with pytest.raises(ValueError, match="pass --overwrite"):
        export_merged_model(base, merged, 0.0, out_dir)
    export_merged_model(base, merged, 0.0, out_dir, overwrite=True)
    exported = _load(out_dir / "model.safetensors")
    assert all(torch.equal(exported[n], theta0[n]) for n in theta0)


# ---------------------------------------------------------------------------------------------- global pre-pass


def test_streaming_order_statistics_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, 1000, generator=gen)
    values[:, :10] = 0
    values[1, 20:30] = -0.0
    values[2, :5] = 3.0
    positions = torch.tensor([[0, 5, 999], [10, 500, 998], [0, 997, 999]])
    got = streaming_order_statistics(lambda: [values[:, :300], values[:, 300:700], values[:, 700:]], positions)
    assert torch.equal(got, torch.sort(values, dim=1).values.gather(1, positions))
    with pytest.raises(ValueError):
        streaming_order_statistics(lambda: [values], torch.tensor([[1000]] * 3))


@pytest.mark.parametrize("method,params", [("ties", {"scope": "global", "density": 0.3}),
                                           ("pcb", {"scope": "global", "pcb_ratio": 0.2})])
def test_global_scope_equals_flat_model(tiny_whisper, task_vector_files, tmp_path: Path, method, params) -> None:
    """The engine's exact model-wide pre-pass makes the streamed merge equal the merge of the flattened model."""
    base, _ = tiny_whisper
    out = merge(base, task_vectors=task_vector_files, method=method, params=params, out_path=tmp_path / "g.safetensors")
    merged = _load(out)
    taus = [_load(p) for p in task_vector_files]
    names = open_checkpoint(base).float_names
    flat = torch.stack([torch.cat([t[n].reshape(-1) for n in names]) for t in taus])
    expected = get_method(method).fn(flat, torch.zeros(flat.shape[1]), **params)
    got = torch.cat([merged[n].reshape(-1) for n in names])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------------------------------------- diagnostics


def test_diagnostics_json(tiny_whisper, task_vector_files, tmp_path: Path) -> None:
    base, _ = tiny_whisper
    diag = tmp_path / "diag.json"
    merge(base, task_vectors=task_vector_files, method="tsv_m", params={"orthogonaliser": "newton_schulz"},
          out_path=tmp_path / "m.safetensors", diagnostics_path=diag)
    report = json.loads(diag.read_text())
    assert report["method"] == "tsv_m" and report["params"]["orthogonaliser"] == "newton_schulz"
    record = report["tensors"][ATTN]
    assert len(record["task_singular_values"]) == 3 and len(record["merged_singular_values"]) == 16
    assert 1 <= record["merged_effective_rank"] <= 16
    assert 0 <= record["sign_conflict_rate"] <= 1
    assert 0 < record["ns_max_orthogonality_error"] < 0.5
    assert "ns_max_orthogonality_error" not in report["tensors"][TOKENS]  # excluded: mean, no NS
    assert CONV not in report["tensors"]  # 3-D tensors are not diagnosed
    assert report["summary"]["n_matrices"] == len(report["tensors"])


# ------------------------------------------------------------------------------------- one pass to a merged model


def test_read_into_ranges_and_dtypes(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(5, 7), "h": torch.randn(4, 3).half(), "b": torch.randn(9).to(torch.bfloat16)}
    path = save_tensors(tmp_path / "x.safetensors", tensors)
    with open_checkpoint(path) as ckpt:
        for name, tensor in tensors.items():
            flat = tensor.float().reshape(-1)
            assert torch.equal(ckpt.get_float(name), tensor.float())
            out = torch.empty(4)
            assert torch.equal(ckpt.read_into(name, out, start=3), flat[3:7])
            same = torch.empty(2, dtype=tensor.dtype)
            assert torch.equal(ckpt.read_into(name, same, start=1), tensor.reshape(-1)[1:3])
        with pytest.raises(ValueError, match="outside"):
            ckpt.read_into("a", torch.empty(10), start=30)


@pytest.mark.parametrize("background", [False, True])
def test_writer_parts(tmp_path: Path, monkeypatch, background: bool) -> None:
    monkeypatch.setattr(SafetensorsWriter, "BACKGROUND_BYTES", 8)  # the queue fills: writes wait for the thread
    monkeypatch.setattr(SafetensorsWriter, "SYNC_BYTES", 16)  # and it flushes to disk on the way
    entries = [TensorEntry("a", torch.float32, (3, 4)), TensorEntry("b", torch.float16, (0,)),
               TensorEntry("c", torch.float16, (5,))]
    a, c = torch.randn(3, 4), torch.randn(5).half()
    with SafetensorsWriter(tmp_path / "p.safetensors", entries, background=background) as writer:
        writer.write_part("a", a.reshape(-1)[:5])
        with pytest.raises(ValueError, match="partly written"):
            writer.write("a", a)
        writer.write_part("a", a.reshape(-1)[5:])
        writer.write("b", torch.zeros(0).half())
        with pytest.raises(ValueError, match="float32"):
            writer.write_part("c", c.float())
        writer.write_part("c", c[:2])
        with pytest.raises(ValueError, match="exceed"):
            writer.write_part("c", c)
        writer.write_part("c", c[2:])
    got = _load(tmp_path / "p.safetensors")
    assert torch.equal(got["a"], a) and torch.equal(got["c"], c) and got["b"].numel() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with SafetensorsWriter(tmp_path / "q.safetensors", entries, background=background) as writer:
            writer.write_part("a", a.reshape(-1)[:5])
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["p.safetensors"]


@pytest.mark.parametrize("method,params", [("task_arithmetic", {}), ("ties", {}), ("dare", {"p": 0.5}),
                                           ("ties", {"scope": "global", "aggregation": "sum"})])
def test_out_model_equals_merge_then_export(tiny_whisper, tmp_path: Path, method, params) -> None:
    """One pass fine-tuned checkpoints → model folder gives the bytes of merge → τ file → export, and both outputs
    can come from the same pass."""
    base, finetuned = tiny_whisper
    tau = tmp_path / "tau.safetensors"
    merge(base, finetuned=finetuned, method=method, params=params, out_path=tau, seed=5)
    exported = export_merged_model(base, tau, 0.7, tmp_path / "exported")
    one_pass = merge(base, finetuned=finetuned, method=method, params=params, out_model=tmp_path / "model", lam=0.7,
                     seed=5)
    assert one_pass == tmp_path / "model"
    a, b = _load(exported / "model.safetensors"), _load(one_pass / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert {"config.json", "generation_config.json", "preprocessor_config.json", "merge_info.json"} <= set(os.listdir(one_pass))
    info = json.loads((one_pass / "merge_info.json").read_text())
    assert info["method"] == method and info["lambda"] == 0.7 and info["seed"] == 5
    assert info["inputs"] == [str(f) for f in finetuned] and info["input_kind"] == "finetuned"
    both = merge(base, finetuned=finetuned, method=method, params=params, out_path=tmp_path / "tau2.safetensors",
                 out_model=tmp_path / "model2", lam=0.7, seed=5)
    assert both == tmp_path / "tau2.safetensors"
    assert both.read_bytes() == tau.read_bytes()
    assert (tmp_path / "model2" / "model.safetensors").read_bytes() == (one_pass / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_out_model_keeps_base_dtypes_and_loads(tiny_whisper_factory, tmp_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    for dtype in (torch.float16, torch.bfloat16):
        base, finetuned = tiny_whisper_factory(2, dtype)
        out = merge(base, finetuned=finetuned, method="model_soup", out_model=tmp_path / f"m_{str(dtype)[6:]}")
        merged = _load(out / "model.safetensors")
        theta = [_load(p / "model.safetensors") for p in (base, *finetuned)]
        assert merged.keys() == theta[0].keys() and all(t.dtype == dtype for t in merged.values())
        soup = (theta[1][ATTN].float() + theta[2][ATTN].float()) / 2
        torch.testing.assert_close(merged[ATTN].float(), soup, rtol=0, atol=2e-2)
        WhisperForConditionalGeneration.from_pretrained(out)


def test_out_model_is_atomic_on_error(tiny_whisper, tmp_path: Path) -> None:
    base, finetuned = tiny_whisper

    def poison(tensors):
        tensors[TOKENS] = tensors[TOKENS].clone()
        tensors[TOKENS][1, 2] = float("inf")

    bad = _corrupt_copy(finetuned[0], tmp_path / "inf", poison)
    out = tmp_path / "out" / "model"
    with pytest.raises(ValueError, match=r"embed_tokens\.weight.*inf.*NaN or Inf"):
        merge(base, finetuned=[finetuned[1], bad], method="model_soup", out_model=out, out_path=tmp_path / "t.safetensors")
    assert not out.exists() and os.listdir(tmp_path / "out") == [] and not (tmp_path / "t.safetensors").exists()
    with pytest.raises(ValueError, match="out_path"):
        merge(base, finetuned=finetuned, method="model_soup")
    with pytest.raises(ValueError, match="base model folder"):
        merge(base / "model.safetensors", finetuned=finetuned, method="model_soup", out_model=out)


ELEMENTWISE = [("model_soup", {}), ("task_arithmetic", {}), ("consensus_ta", {}),
               ("ties", {"scope": "global", "density": 0.3}), ("pcb", {"scope": "global", "pcb_ratio": 0.2})]


@pytest.mark.parametrize("method,params", [*ELEMENTWISE, ("tsv_m", {})])
def test_elementwise_methods_merge_in_slices(tiny_whisper, tmp_path: Path, monkeypatch, method, params) -> None:
    """Slicing tensors (odd slice sizes, several per tensor) changes nothing: those methods are elementwise (and a
    subspace method's averaged tensors are sliced, its matrices not)."""
    from asrmerge.merging import plan

    base, finetuned = tiny_whisper
    spec = get_method(method)
    assert spec.is_elementwise(resolve_params(spec, params)) == ((method, params) in ELEMENTWISE)
    monkeypatch.setattr(plan, "SLICE_ELEMENTS", 1 << 40)  # every tensor whole
    whole = _load(merge(base, finetuned=finetuned, method=method, params=params, out_path=tmp_path / "w.safetensors"))
    monkeypatch.setattr(plan, "SLICE_ELEMENTS", 7)
    monkeypatch.setattr(plan, "STATS_SLICE_ELEMENTS", 13)
    sliced = _load(merge(base, finetuned=finetuned, method=method, params=params, out_path=tmp_path / "s.safetensors"))
    for name in whole:
        torch.testing.assert_close(sliced[name], whole[name], rtol=1e-6, atol=1e-9)
    assert not get_method("dare").is_elementwise({}) and not get_method("ties").is_elementwise({"scope": "tensor"})


@pytest.mark.parametrize("limit", [0, 5000])  # tiny Whisper, T = 3: 16×16 matrices take 4096 B, 32×16 8192 B
def test_whole_tensor_read_ahead_changes_nothing(tiny_whisper, tmp_path: Path, monkeypatch, limit) -> None:
    """Whole tensors are read ahead in a background thread up to PREFETCH_BYTES; with none read ahead (0), or only
    the smaller ones (so prefetched and synchronous reads alternate between the two buffer sets), the bytes written
    are the same."""
    from asrmerge.merging import plan

    base, finetuned = tiny_whisper
    ahead = _load(merge(base, finetuned=finetuned, method="tsv_m", out_path=tmp_path / "a.safetensors"))
    monkeypatch.setattr(plan, "PREFETCH_BYTES", limit)
    mixed = _load(merge(base, finetuned=finetuned, method="tsv_m", out_path=tmp_path / "m.safetensors"))
    for name in ahead:
        assert torch.equal(mixed[name], ahead[name]), name


@pytest.mark.parametrize("method,params", [("tsv_m", {"orthogonaliser": "newton_schulz"}), ("ties", {"scope": "global"}),
                                           ("dare", {}), ("task_arithmetic", {})])
def test_diagnostics_tap_the_merge_without_changing_it(tiny_whisper, tmp_path: Path, monkeypatch, method, params) -> None:
    """Diagnostics ride on the merge's own paths (side by side, slices): the merged τ has the same bytes with and
    without them, and every 2-D tensor has its record, in storage order."""
    from asrmerge.merging import plan

    base, finetuned = tiny_whisper
    monkeypatch.setattr(plan, "SLICE_ELEMENTS", 7)  # the elementwise merges run in slices
    plain = _load(merge(base, finetuned=finetuned, method=method, params=params, out_path=tmp_path / "p.safetensors"))
    tapped = _load(merge(base, finetuned=finetuned, method=method, params=params, out_path=tmp_path / "t.safetensors",
                         diagnostics_path=tmp_path / "d.json"))
    for name in plain:
        assert torch.equal(tapped[name], plain[name]), name
    records = json.loads((tmp_path / "d.json").read_text())["tensors"]
    assert list(records) == [n for n, t in plain.items() if t.ndim == 2 and min(t.shape) > 0]
    if params.get("orthogonaliser") == "newton_schulz":
        assert all("ns_max_orthogonality_error" in r for n, r in records.items() if "embed" not in n)


def test_one_blas_thread_pins_this_thread_and_restores() -> None:
    """Inside the block every loaded OpenBLAS runs this thread's calls on one thread; after it, the count before."""
    import scipy.linalg.cython_lapack  # noqa: F401  (loads scipy's OpenBLAS beside numpy's)

    from asrmerge.merging import runtime

    setters = runtime._openblas_thread_setters()
    if not setters:
        pytest.skip("no OpenBLAS with per-thread settings in this environment")

    def current() -> list[int]:
        counts = [set_local(1) for set_local in setters]  # returns the previous count: put it back
        for set_local, count in zip(setters, counts):
            set_local(count)
        return counts

    original = current()
    try:
        for set_local in setters:
            set_local(2)
        with runtime.one_blas_thread():
            assert current() == [1] * len(setters)
        assert current() == [2] * len(setters)
    finally:
        for set_local, count in zip(setters, original):
            set_local(count)


@pytest.mark.parametrize("method,params", [("tsv_m", {}), ("iso_cts", {}), ("iso_c", {}), ("star", {})])
def test_side_by_side_merges_equal_one_thread(tiny_whisper, tmp_path: Path, method, params) -> None:
    """On CPU, SVD methods merge whole tensors side by side, one OpenMP thread each: the same bytes as a one-thread run,
    whatever the number of threads (two here, whatever the tests' own setting: tests/conftest.py)."""
    base, finetuned = tiny_whisper
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        side_by_side = _load(merge(base, finetuned=finetuned, method=method, params=params,
                                   out_path=tmp_path / "s.safetensors"))
        torch.set_num_threads(1)
        sequential = _load(merge(base, finetuned=finetuned, method=method, params=params,
                                 out_path=tmp_path / "q.safetensors"))
    finally:
        torch.set_num_threads(threads)
    for name in sequential:
        assert torch.equal(side_by_side[name], sequential[name]), name


def test_mixed_dtype_model_is_stored_aligned(tmp_path: Path) -> None:
    """float16, float32 and int64 tensors of odd sizes: every tensor of the merged model starts at a multiple of its
    element size (safetensors' own order), and holds θ₀ + λ·merged τ or the base's copy."""
    generator = torch.Generator().manual_seed(0)
    base = {"a.weight": torch.randn(3, generator=generator).half(), "b.weight": torch.randn(3, 3, generator=generator),
            "c.index": torch.arange(3), "d.bias": torch.randn(5, generator=generator).half()}
    folders = []
    for index, scale in enumerate((0.0, 0.1, -0.2)):
        folder = tmp_path / f"m{index}"
        folder.mkdir()
        shifted = {n: t + scale if t.is_floating_point() else t for n, t in base.items()}
        save_tensors(folder / "model.safetensors", shifted)
        folders.append(folder)
    out = merge(folders[0], finetuned=folders[1:], method="task_arithmetic", out_model=tmp_path / "merged", lam=1.0)
    path = out / "model.safetensors"
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_length])
    sizes = {"F16": 2, "F32": 4, "I64": 8}
    for name in base:
        start = header[name]["data_offsets"][0]
        assert start % sizes[header[name]["dtype"]] == 0, name
    merged = _load(path)
    assert torch.equal(merged["c.index"], base["c.index"])
    torch.testing.assert_close(merged["b.weight"], base["b.weight"] - 0.1, rtol=0, atol=1e-6)
    torch.testing.assert_close(merged["a.weight"].float(), (base["a.weight"].float() - 0.1), rtol=0, atol=5e-3)


@pytest.mark.parametrize("method,params", [("tsv_m", {"orthogonaliser": "newton_schulz"}), ("ties", {})])
def test_diagnostics_from_files_equal_those_taken_during_the_merge(tiny_whisper, tmp_path: Path, method, params) -> None:
    """The workflow's merge_diagnostics job (merged τ + task vectors + their cached spectra) writes the records the
    merge command's --diagnostics takes during the merge, header included, less the NS orthogonality error."""
    from asrmerge.merging.diagnostics import diagnose_merge, write_task_spectra
    from asrmerge.merging.engine import compute_task_vector

    base, finetuned = tiny_whisper
    taus = [compute_task_vector(base, ft, tmp_path / f"tau{i}.safetensors") for i, ft in enumerate(finetuned)]
    spectra = [write_task_spectra(tau, tmp_path / f"tau{i}.spectra.json") for i, tau in enumerate(taus)]
    merge(base, task_vectors=taus, method=method, params=params, out_path=tmp_path / "m.safetensors",
          diagnostics_path=tmp_path / "during.json")
    diagnose_merge(tmp_path / "m.safetensors", taus, spectra, tmp_path / "after.json")
    during, after = (json.loads((tmp_path / f).read_text()) for f in ("during.json", "after.json"))
    for record in during["tensors"].values():
        record.pop("ns_max_orthogonality_error", None)
    during["summary"].pop("ns_max_orthogonality_error", None)
    assert after == during
