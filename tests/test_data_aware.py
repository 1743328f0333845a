"""Data-aware merges: RegMean and Fisher merging against independent float64 re-implementations of their references
(FusionBench 0.2.33, in θ space), the engine's statistics inputs and their checks, and the statistics themselves."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from asrmerge.data.manifest import read_manifest
from asrmerge.merging import compute_task_vector, merge, open_checkpoint
from asrmerge.merging.checkpoint import FINETUNED_FINGERPRINT, MODEL_FINGERPRINT, TASK_FINGERPRINTS, save_tensors
from asrmerge.merging.registry import get_method, resolve_params
from asrmerge.merging.spec import STATISTICS_FILE_KIND
from asrmerge.training.statistics import (
    StatisticsOptions,
    draw_utterances,
    fisher_statistics,
    gram_statistics,
    linear_weights,
    write_statistics,
)
from speech_world import build_tiny_corpus, build_tiny_whisper

F64 = torch.float64
CPU = torch.device("cpu")


# ====================================================================== reference re-implementations (θ space, float64)


def ref_regmean(thetas: list[torch.Tensor], grams: list[torch.Tensor], ratio: float) -> torch.Tensor:
    """FusionBench merging_with_regmean_weights for one Linear weight: off-diagonals × ratio, W = (ΣG)⁻¹ ΣG Wᵀ."""
    reduced = []
    for g in grams:
        scale = torch.full_like(g, ratio)
        scale.fill_diagonal_(1.0)
        reduced.append(g * scale)
    summed = sum(reduced)
    products = sum(g @ theta.T for g, theta in zip(reduced, thetas))
    return (torch.inverse(summed) @ products).T


def ref_fisher(params: list[dict[str, torch.Tensor]], fishers: list[dict[str, torch.Tensor]], normalize: bool,
               minimal: float) -> dict[str, torch.Tensor]:
    """FusionBench merging_with_fisher_weights with uniform scaling coefficients."""
    count = len(params)
    coefficients = torch.full((count,), 1.0 / count, dtype=F64)
    if normalize:
        norms = torch.stack([torch.stack([f[n].norm() for n in f]).norm() for f in fishers])
        inverse = 1.0 / (norms + minimal)
        coefficients = coefficients * inverse / inverse.sum()
    merged = {}
    for name in params[0]:
        numerator = sum(c * (f[name] + minimal) * p[name] for c, f, p in zip(coefficients, fishers, params))
        denominator = sum(c * (f[name] + minimal) for c, f in zip(coefficients, fishers))
        merged[name] = numerator / denominator
    return merged


def random_gram(size: int, generator: torch.Generator, rows: int = 40) -> torch.Tensor:
    x = torch.randn(rows, size, generator=generator, dtype=F64) * torch.rand(size, generator=generator, dtype=F64)
    return (x.T @ x / rows).float()


# ======================================================================================= the methods themselves


@pytest.mark.parametrize("alpha", [1.0, 0.9, 0.3, 0.0])
def test_regmean_equals_its_reference(alpha: float) -> None:
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=gen)
    taus = torch.randn(3, 6, 5, generator=gen) * 0.1
    grams = torch.stack([random_gram(5, gen) for _ in range(3)])
    got = get_method("regmean").fn(taus, base, statistics=grams, alpha=alpha)
    want = ref_regmean([(base + t).double() for t in taus], [g.double() for g in grams], alpha)
    torch.testing.assert_close((base.double() + got.double()), want, rtol=0, atol=1e-5)


def test_regmean_with_equal_inputs_is_the_mean_and_without_statistics_too() -> None:
    gen = torch.Generator().manual_seed(2)
    base, taus = torch.randn(4, 3, generator=gen), torch.randn(3, 4, 3, generator=gen)
    same = random_gram(3, gen).expand(3, 3, 3).clone()
    regmean = get_method("regmean").fn
    torch.testing.assert_close(regmean(taus, base, statistics=same, alpha=1.0), taus.mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(regmean(taus, base, statistics=None), taus.mean(0))
    with pytest.raises(ValueError, match="Gram statistics of shape"):
        regmean(taus, base, statistics=torch.ones(3, 4, 4))


def test_fisher_weights_each_entry_by_the_tasks_information() -> None:
    taus = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    fisher = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    got = get_method("fisher").fn(taus, torch.zeros(2), statistics=fisher, minimal_weight=1e-6, normalize=False)
    torch.testing.assert_close(got, torch.tensor([2.0, 3.0]), rtol=1e-5, atol=1e-5)  # 1e-6-weighted first task


# ========================================================================= through the engine, statistics files


def _statistics_file(path: Path, kind: str, tensors: dict[str, torch.Tensor], *task_vectors: Path) -> Path:
    """A statistics file that records the fine-tune(s) it was computed for (those `task_vectors` were made from):
    one task's (MODEL_FINGERPRINT), or every task's in order (TASK_FINGERPRINTS)."""
    origins = []
    for path_of_tau in task_vectors:
        with open_checkpoint(path_of_tau) as tau:
            origins.append(tau.metadata[FINETUNED_FINGERPRINT])
    record = {MODEL_FINGERPRINT: origins[0]} if len(origins) == 1 else {TASK_FINGERPRINTS: json.dumps(origins)}
    return save_tensors(path, tensors, {"format": "pt", "kind": STATISTICS_FILE_KIND, "statistics": kind, **record})


@pytest.fixture(scope="module")
def merge_inputs(tiny_whisper, tmp_path_factory):
    """(base, task-vector files, gram files, fisher files, θ₀ tensors, θ_t tensors) of the tiny Whisper."""
    base, finetuned = tiny_whisper
    out = tmp_path_factory.mktemp("data_aware")
    taus = [compute_task_vector(base, ft, out / f"tv{i}.safetensors") for i, ft in enumerate(finetuned)]
    with open_checkpoint(base) as ckpt:
        theta0 = {n: ckpt.get_float(n) for n in ckpt.float_names}
    thetas = [{n: theta0[n] + t for n, t in load_file(str(p)).items()} for p in taus]
    gen = torch.Generator().manual_seed(3)
    matrices = [n for n, t in theta0.items() if t.ndim == 2 and "embed" not in n]
    grams = [_statistics_file(out / f"gram{i}.safetensors", "gram",
                              {n: random_gram(theta0[n].shape[1], gen) for n in matrices}, taus[i])
             for i in range(len(taus))]
    fishers = [_statistics_file(out / f"fisher{i}.safetensors", "fisher",
                                {n: torch.rand(t.shape, generator=gen) ** 4 for n, t in theta0.items() if "positions" not in n},
                                taus[i])
               for i in range(len(taus))]
    return base, taus, grams, fishers, theta0, thetas


def test_regmean_merge_of_a_model_equals_the_reference(merge_inputs, tmp_path: Path) -> None:
    base, taus, grams, _, theta0, thetas = merge_inputs
    out = merge(base, task_vectors=taus, method="regmean", params={"alpha": 0.8}, statistics=grams,
                out_path=tmp_path / "m.safetensors")
    merged = load_file(str(out))
    stats = [load_file(str(g)) for g in grams]
    for name, tau in merged.items():
        if name in stats[0]:
            want = ref_regmean([t[name].double() for t in thetas], [s[name].double() for s in stats], 0.8)
        else:  # no linear layer of its own: the mean, as the reference averages it
            want = sum(t[name].double() for t in thetas) / len(thetas)
        torch.testing.assert_close(theta0[name].double() + tau.double(), want, rtol=0, atol=1e-5, msg=name)


def test_statistics_are_matched_to_task_vectors_by_origin_never_by_position(merge_inputs, tmp_path: Path) -> None:
    """Statistics given in any order merge as in the tasks' order; a file computed from another model is refused."""
    base, taus, grams, _, _, _ = merge_inputs
    in_order = load_file(str(merge(base, task_vectors=taus, method="regmean", statistics=grams,
                                   out_path=tmp_path / "a.safetensors")))
    shuffled = load_file(str(merge(base, task_vectors=taus, method="regmean", statistics=grams[::-1],
                                   out_path=tmp_path / "b.safetensors")))
    assert all(torch.equal(in_order[n], shuffled[n]) for n in in_order)
    with pytest.raises(ValueError, match="no statistics file was computed from the fine-tune of task"):
        merge(base, task_vectors=taus, method="regmean", statistics=[grams[0], grams[0], grams[1]][:len(taus)],
              out_path=tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("normalize", [True, False])
def test_fisher_merge_of_a_model_equals_the_reference(merge_inputs, tmp_path: Path, normalize: bool) -> None:
    base, taus, _, fishers, theta0, thetas = merge_inputs
    out = merge(base, task_vectors=taus, method="fisher", params={"normalize": normalize}, statistics=fishers,
                out_path=tmp_path / "m.safetensors")
    merged = load_file(str(out))
    stats = [{n: t.double() for n, t in load_file(str(f)).items()} for f in fishers]
    covered = list(stats[0])
    want = ref_fisher([{n: t[n].double() for n in covered} for t in thetas], stats, normalize, 1e-6)
    for name, tau in merged.items():
        expected = want[name] if name in want else sum(t[name].double() for t in thetas) / len(thetas)
        torch.testing.assert_close(theta0[name].double() + tau.double(), expected, rtol=0, atol=1e-5, msg=name)


def test_statistics_inputs_are_checked_before_merging(merge_inputs, tmp_path: Path) -> None:
    base, taus, grams, fishers, theta0, _ = merge_inputs
    out = tmp_path / "m.safetensors"

    def attempt(method: str, statistics) -> None:
        merge(base, task_vectors=taus, method=method, statistics=statistics, out_path=out)

    with pytest.raises(ValueError, match="needs gram statistics"):
        attempt("regmean", None)
    with pytest.raises(ValueError, match="uses no statistics"):
        attempt("task_arithmetic", grams)
    with pytest.raises(ValueError, match="one file per task is needed for 3 tasks, got 2"):
        attempt("regmean", grams[:2])
    with pytest.raises(ValueError, match="is not a file of gram statistics"):
        attempt("regmean", fishers)
    with pytest.raises(ValueError, match="is not a file of gram statistics"):
        attempt("regmean", taus)  # a task vector given as statistics
    odd = dict(load_file(str(grams[0])))
    odd.pop(sorted(odd)[0])
    with pytest.raises(ValueError, match="cover different tensors"):
        attempt("regmean", [grams[0], _statistics_file(tmp_path / "odd.safetensors", "gram", odd, taus[1]), grams[2]])
    name = next(n for n, t in theta0.items() if t.ndim == 2 and t.shape[0] != t.shape[1] and "embed" not in n)
    bad = {**load_file(str(grams[0])), name: torch.eye(theta0[name].shape[0])}
    with pytest.raises(ValueError, match=f"statistics of '{name}' are shaped"):
        attempt("regmean", [_statistics_file(tmp_path / "bad.safetensors", "gram", bad, taus[0]), grams[1], grams[2]])
    assert not out.exists()


# ==================================================================================== the statistics themselves


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    manifest = build_tiny_corpus(tmp_path_factory.mktemp("corpus"))
    return build_tiny_whisper(manifest), read_manifest(manifest, split="train")


def test_gram_of_a_layer_equals_its_inputs_outer_products(world) -> None:
    """Against the inputs computed without hooks: the first encoder layer's attention sees the layer-normed
    embedding (every frame of the window), the decoder's first self-attention its layer-normed token embeddings
    (the real tokens only), its cross-attention keys the encoder's output (every frame)."""
    from asrmerge.training.loop import FeatureCache, teacher_forcing

    whisper, utterances = world
    utterances = utterances[:3]
    grams = gram_statistics(whisper, utterances, StatisticsOptions(batch_size=2), CPU)
    model = whisper.model.model
    with torch.no_grad():
        features = FeatureCache(whisper, max_bytes=0)(utterances, CPU)
        encoder = model.encoder(features, output_hidden_states=True)
        inputs, _, valid = teacher_forcing(whisper, utterances)
        decoder = model.decoder(input_ids=inputs, encoder_hidden_states=encoder.last_hidden_state, output_hidden_states=True)
    frames = model.encoder.layers[0].self_attn_layer_norm(encoder.hidden_states[0]).reshape(-1, 64).double()
    tokens = model.decoder.layers[0].self_attn_layer_norm(decoder.hidden_states[0])[valid].double()
    states = encoder.last_hidden_state.reshape(-1, 64).double()
    expected = {"model.encoder.layers.0.self_attn.q_proj.weight": frames.T @ frames / len(frames),
                "model.decoder.layers.0.self_attn.k_proj.weight": tokens.T @ tokens / len(tokens),
                "model.decoder.layers.0.encoder_attn.v_proj.weight": states.T @ states / len(states)}
    for name, want in expected.items():
        torch.testing.assert_close(grams[name].double(), want, rtol=1e-4, atol=1e-5, msg=name)
    assert "proj_out.weight" not in grams  # tied to the token embedding
    assert set(grams) == set(linear_weights(whisper))


def test_fisher_is_the_mean_squared_gradient_of_each_utterance(world) -> None:
    from asrmerge.training.loop import FeatureCache, teacher_forcing

    whisper, utterances = world
    utterances = utterances[:2]
    fisher = fisher_statistics(whisper, utterances, StatisticsOptions(), CPU)
    name = "model.decoder.layers.0.fc1.weight"
    squares = []
    for utterance in utterances:
        whisper.model.zero_grad()
        inputs, targets, _ = teacher_forcing(whisper, [utterance])
        logits = whisper.model(input_features=FeatureCache(whisper, 0)([utterance], CPU), decoder_input_ids=inputs).logits
        log_p = torch.log_softmax(logits.float(), dim=-1)
        picked = [log_p[0, i, t] for i, t in enumerate(targets[0].tolist()) if t != -100]
        torch.stack(picked).sum().backward()
        squares.append(dict(whisper.model.named_parameters())[name].grad.square().clone())
    torch.testing.assert_close(fisher[name], sum(squares) / 2, rtol=1e-4, atol=1e-10)
    assert "model.encoder.embed_positions.weight" not in fisher  # frozen: the merge averages it


def test_statistics_files_are_reproducible_and_sampled_differs(world, tmp_path: Path) -> None:
    whisper, utterances = world
    provenance = {"model": "tiny"}

    def write(kind: str, name: str, **options) -> bytes:
        path = tmp_path / name
        write_statistics(kind, whisper, utterances, StatisticsOptions(utterances=3, **options), CPU, path, provenance)
        return path.read_bytes()

    assert write("gram", "a") == write("gram", "b")
    empirical = write("fisher", "c")
    assert write("fisher", "d", fisher_outputs="sampled") == write("fisher", "e", fisher_outputs="sampled")
    assert write("fisher", "f", fisher_outputs="sampled") != empirical
    with open_checkpoint(tmp_path / "f") as ckpt:
        assert ckpt.metadata["statistics"] == "fisher" and ckpt.metadata["fisher_outputs"] == "sampled"
        assert ckpt.metadata["utterances"] == "3"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_statistics_stored_in_half_precision_are_the_float32_ones_rounded(world, tmp_path: Path, dtype) -> None:
    """statistics.storage_dtype halves a statistics file; the merge reads it back in float32 (get_float)."""
    whisper, utterances = world
    for kind in ("gram", "fisher"):
        full, half = tmp_path / f"{kind}.float32", tmp_path / f"{kind}.{dtype}"
        write_statistics(kind, whisper, utterances, StatisticsOptions(utterances=3), CPU, full, {})
        write_statistics(kind, whisper, utterances, StatisticsOptions(utterances=3, storage_dtype=dtype), CPU, half, {})
        with open_checkpoint(full) as a, open_checkpoint(half) as b:
            assert a.names == b.names and all(b.dtypes[n] == getattr(torch, dtype) for n in b.names)
            for name in a.names:
                assert torch.equal(b.get_float(name), a.get_float(name).to(getattr(torch, dtype)).float())
        assert half.stat().st_size < 0.6 * full.stat().st_size


def test_statistics_options_are_checked(world, tmp_path: Path) -> None:
    whisper, utterances = world
    with pytest.raises(ValueError, match="statistics.max_memory_mb = 0.01"):
        write_statistics("gram", whisper, utterances, StatisticsOptions(max_memory_mb=0.01), CPU, tmp_path / "x", {})
    with pytest.raises(ValueError, match="match no linear layer"):
        write_statistics("gram", whisper, utterances, StatisticsOptions(layers=("nothing",)), CPU, tmp_path / "x", {})
    with pytest.raises(ValueError, match="fisher_outputs"):
        StatisticsOptions(fisher_outputs="expected")
    with pytest.raises(ValueError, match="storage_dtype"):
        StatisticsOptions(storage_dtype="float64")
    assert not (tmp_path / "x").exists()
    assert [u.id for u in draw_utterances(utterances, 3, 0)] == [u.id for u in draw_utterances(utterances, 3, 0)]
    assert draw_utterances(utterances, 100, 0) == list(utterances)


def test_registered_data_aware_methods() -> None:
    assert get_method("regmean").statistics == "gram" and get_method("regmean").matrix_only
    assert get_method("fisher").statistics == "fisher"
    assert resolve_params("regmean") == {"alpha": 0.9}
    with pytest.raises(ValueError, match="minimal_weight"):
        resolve_params("fisher", {"minimal_weight": 0.0})


# ================================================================================================== AdaMerging


def test_adamerging_applies_its_coefficients() -> None:
    taus, base = torch.randn(3, 4, 5), torch.randn(4, 5)
    coefficients = torch.tensor([0.2, 0.0, 1.0])
    fn = get_method("adamerging").fn
    torch.testing.assert_close(fn(taus, base, statistics=coefficients), 0.2 * taus[0] + taus[2])
    torch.testing.assert_close(fn(taus, base, statistics=None, init=0.3), 0.3 * taus.sum(0))


def test_decoder_batch_predicts_the_transcript_and_its_end() -> None:
    from asrmerge.training.adamerging import _decoder_batch

    inputs, predicted = _decoder_batch([7, 8, 9], [[1, 2], []], eot=0)
    assert inputs.tolist() == [[7, 8, 9, 1, 2], [7, 8, 9, 0, 0]]
    # positions 2, 3, 4 predict 1, 2, <eot>; the empty transcript only its <eot>
    assert predicted.tolist() == [[False, False, True, True, True], [False, False, True, False, False]]


@pytest.mark.parametrize("granularity", ["task", "layer"])
def test_adamerging_learns_bounded_reproducible_coefficients(world, granularity: str) -> None:
    from asrmerge.training.adamerging import AdaMergingOptions, learn_coefficients

    whisper, utterances = world
    theta0 = {n: p.detach().clone() for n, p in whisper.model.named_parameters()}
    gen = torch.Generator().manual_seed(5)
    names = [n for n in theta0 if "layers.0" in n]
    task_vectors = {n: 0.05 * torch.randn(2, *theta0[n].shape, generator=gen) for n in names}
    options = AdaMergingOptions(granularity=granularity, steps=3, learning_rate=0.05, batch_size=2, max_new_tokens=6)
    first, curve = learn_coefficients(whisper, task_vectors, utterances, options, CPU)
    second, _ = learn_coefficients(whisper, task_vectors, utterances, options, CPU)
    assert set(first) == set(names) and len(curve) == 3
    assert all(torch.equal(first[n], second[n]) for n in names)
    stacked = torch.stack(list(first.values()))
    assert bool(((stacked >= 0) & (stacked <= 1)).all()) and not torch.allclose(stacked, torch.full_like(stacked, 0.3))
    assert (len(torch.unique(stacked, dim=0)) == 1) == (granularity == "task")
    assert all(torch.equal(p, theta0[n]) for n, p in whisper.model.named_parameters())  # the model is θ₀ again


def test_adamerging_merge_reads_one_file_of_coefficients(merge_inputs, tmp_path: Path) -> None:
    base, taus, _, _, theta0, _ = merge_inputs
    coefficients = {n: torch.tensor([0.1, 0.5, 0.9]) for n in list(theta0)[:-3]}
    path = _statistics_file(tmp_path / "c.safetensors", "coefficients", coefficients, *taus)
    merged = load_file(str(merge(base, task_vectors=taus, method="adamerging", statistics=[path],
                                 out_path=tmp_path / "m.safetensors")))
    with pytest.raises(ValueError, match="not learned for these task vectors in this order"):
        merge(base, task_vectors=taus[::-1], method="adamerging", statistics=[path], out_path=tmp_path / "r.safetensors")
    tau = [load_file(str(p)) for p in taus]
    for name, value in merged.items():
        weights = coefficients.get(name, torch.full((3,), 0.3))
        torch.testing.assert_close(value, sum(w * t[name] for w, t in zip(weights, tau)), msg=name)
    with pytest.raises(ValueError, match="one file is needed for 3 tasks, got 3"):
        merge(base, task_vectors=taus, method="adamerging", statistics=[path] * 3, out_path=tmp_path / "x")
