"""Merge methods against independent float64 re-implementations of their reference code, known values, edge cases,
and registry validation.

Each `ref_*` function below follows the named reference implementation step by step (mergekit 0.1.5, FusionBench
0.2.33, the official TSV-M / Iso / PCB / STAR / TALL code), in float64; the library runs in float32 and must agree to
1e-5 relative (Frobenius) error.
"""

from __future__ import annotations

import math

import pytest
import torch

from asrmerge.merging import REGISTRY, get_method, list_methods, resolve_params
from asrmerge.merging.linalg import effective_rank, newton_schulz, orthogonality_error, polar_factor
from asrmerge.merging.spec import SUBSPACE_LAMBDAS, TASK_VECTOR_LAMBDAS, ParamSpec

F64 = torch.float64
TOL = 1e-5

ALL_METHODS = (
    "model_soup", "model_stock", "karcher", "multislerp",
    "task_arithmetic", "ties", "pcb", "sce",
    "iso_c", "iso_cts", "tsv_m", "boosted_tsv_m",
    "dare", "breadcrumbs", "della", "star", "consensus_ta",
)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.to(F64)
    return float(torch.linalg.vector_norm(got.to(F64) - want) / max(float(torch.linalg.vector_norm(want)), 1e-30))


def make(shape: tuple[int, ...], num_tasks: int, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(task vectors (T, *shape), base) in float32: correlated tasks, so sign conflicts and agreements both occur."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(shape, generator=gen)
    tvs = torch.stack([0.6 * shared + torch.randn(shape, generator=gen) for _ in range(num_tasks)]) * scale
    base = torch.randn(shape, generator=gen)
    return tvs.float(), base.float()


def make_spectral(shape: tuple[int, int], num_tasks: int, seed: int = 0, decay: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices U_t diag(decay^i) V_tᵀ with random orthonormal U_t, V_t: distinct, decaying singular values like real
    task vectors. (Gaussian matrices have near-equal σ_k, σ_k+1, whose truncated subspaces are sensitive at float32
    round-off in any SVD implementation, so they cannot test agreement to 1e-5.)"""
    gen = torch.Generator().manual_seed(seed)
    rank = min(shape)
    sigma = decay ** torch.arange(rank, dtype=F64)
    tvs = []
    for _ in range(num_tasks):
        u = torch.linalg.qr(torch.randn(shape[0], rank, generator=gen, dtype=F64))[0]
        v = torch.linalg.qr(torch.randn(shape[1], rank, generator=gen, dtype=F64))[0]
        tvs.append((u * sigma) @ v.T)
    return torch.stack(tvs).float(), torch.randn(shape, generator=gen).float()


def task_statistics(kind: str, tvs: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
    """Plausible statistics of a tensor for data-aware methods: positive-definite Gram matrices of a weight's inputs,
    non-negative Fisher entries, coefficients in [0, 1] (tests/test_data_aware.py checks those methods against their
    references)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "coefficients":
        return torch.rand(tvs.shape[0], generator=gen)
    if kind == "fisher":
        return torch.rand(tvs.shape, generator=gen) ** 2
    if tvs.ndim != 3:
        return None
    x = torch.randn(tvs.shape[0], 4 * tvs.shape[2], tvs.shape[2], generator=gen)
    return x.mT @ x / x.shape[1]


def run(name: str, tvs: torch.Tensor, base: torch.Tensor, seed: int | None = None, **params) -> torch.Tensor:
    method = get_method(name)
    kwargs = resolve_params(method, params)
    if method.uses_rng:
        kwargs["generator"] = torch.Generator().manual_seed(0 if seed is None else seed)
    if method.statistics is not None:
        kwargs["statistics"] = task_statistics(method.statistics, tvs)
    return method.fn(tvs, base, **kwargs)


# ===================================================================================== float64 reference re-implementations


def ref_linear(thetas):  # mergekit linear, normalize=True, weights 1
    result = torch.zeros_like(thetas[0])
    for theta in thetas:
        result += theta * 1.0
    return result / len(thetas)


def ref_model_stock(w0, ws, filter_wise):  # mergekit model_stock
    out_shape = w0.shape
    if filter_wise:
        if w0.dim() == 1:
            w0, ws = w0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w0, ws = w0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cos = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norm_product = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cos.append(((a * b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    cos_theta = torch.stack(cos).mean(dim=0).unsqueeze(-1)
    n = len(ws)
    den = 1 + (n - 1) * cos_theta
    singular = den.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos_theta), n * cos_theta / torch.where(singular, torch.ones_like(den), den))
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(out_shape)


def ref_karcher(tensors, max_iter=10, tol=1e-5):  # mergekit karcher_merge_tensors, α = 1/T
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [t / n for t, n in zip(tensors, norms)]
    mean = sum(a * u for a, u in zip(alphas, units))
    mean = mean / torch.linalg.vector_norm(mean)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(alphas, units):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        tn = torch.linalg.vector_norm(tangent)
        if tn.item() < tol:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        mean = mean / torch.linalg.vector_norm(mean)
    return sum(a * n for a, n in zip(alphas, norms)) * mean


def ref_multislerp(thetas, base, eps=1e-8):  # mergekit multislerp with a base model, uniform weights
    tensors = torch.stack(thetas) - base
    flat = tensors.view(tensors.shape[0], -1)
    weights = torch.ones(len(thetas), dtype=F64) / len(thetas)
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean = mean / torch.norm(mean)
    dots = (units * mean).sum(-1, keepdim=True)
    tangent = ((units - dots * mean) * weights.view(-1, 1)).sum(0)
    tn = torch.norm(tangent) + eps
    result = (mean * torch.cos(tn) + tangent * (torch.sin(tn) / tn)) * (norms.squeeze(-1) * weights).sum()
    return result.view(tensors.shape[1:]) + base


def ref_magnitude(tensor, density):  # mergekit sparsify.magnitude
    if density >= 1:
        return tensor
    k = max(1, int(density * tensor.numel()))
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype)
    mask[torch.argsort(tensor.abs().reshape(-1), descending=True)[:k]] = 1
    return tensor * mask.reshape_as(tensor)


def ref_gta(deltas, consensus, normalize):  # mergekit GeneralizedTaskArithmeticMerge.merge_group, weights 1
    weights = torch.ones(deltas.shape[0], dtype=deltas.dtype).reshape(-1, *([1] * (deltas.dim() - 1)))
    deltas = deltas * weights
    if consensus:
        sign = deltas.sign()
        majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
        mask = (sign == majority).to(deltas.dtype)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
    return mixed / divisor if normalize else mixed


def ref_ties_fusionbench(flat, density, merge_func):  # FusionBench ties_merging_utils.ties_merging
    n, d = flat.shape
    k = d - int(d * density)
    kth = flat.abs().kthvalue(k, dim=1, keepdim=True).values
    trimmed = flat * (flat.abs() >= kth)
    sign = torch.sign(trimmed.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * keep
    if merge_func == "mean":
        return selected.sum(dim=0) / torch.clamp((selected != 0).sum(dim=0).to(F64), min=1)
    return selected.sum(dim=0)


def ref_pcb(flat, ratio):  # official pcb-merging.py PCB_merge
    def normalize(x, dim):
        lo, hi = x.min(dim=dim, keepdim=True).values, x.max(dim=dim, keepdim=True).values
        return (x - lo) / (hi - lo)

    def clamp(x, min_ratio, max_ratio):
        d = x.size(1)
        s = torch.sort(x, dim=1).values
        return torch.clamp(x, s[:, int(d * min_ratio)].unsqueeze(1), s[:, int(d * (1 - max_ratio) - 1)].unsqueeze(1))

    n = flat.shape[0]
    abs_c = clamp(flat.abs(), 0.0001, 0.0001)
    signed = torch.sign(flat) * abs_c
    task_pcb = torch.exp(n * normalize(abs_c, 1) ** 2) * torch.tanh(flat * flat.sum(dim=0))
    scale = normalize(clamp(task_pcb, 1 - ratio, 0), dim=1)
    return (signed * scale).sum(dim=0) / torch.clamp(scale.sum(dim=0), min=1e-12)


def ref_sce(tvs, select_topk):  # mergekit sce
    if select_topk < 1:
        var = torch.var(tvs, dim=0, unbiased=False)
        k = int(torch.count_nonzero(var) * select_topk)
        mask = torch.zeros_like(var)
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k).indices] = 1
        tvs = tvs * mask.unsqueeze(0)
    majority = (tvs.sum(dim=0) >= 0).to(F64) * 2 - 1
    erase = (tvs.sign() == majority).to(F64)
    w = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    w = w / w.sum().item()
    w = w.reshape(-1, *([1] * (tvs.dim() - 1))) * erase
    return (tvs * w).sum(dim=0) / w.sum(dim=0).clamp(min=1e-6)


def ref_procrustes(x):  # TSVM_utils / iso.py: u @ vh of the thin SVD
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def ref_newton_schulz(g, steps=5):  # algorithms.md / Muon quintic, in float64
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.clone()
    if x.size(0) > x.size(1):
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    if g.size(0) > g.size(1):
        x = x.T
    return x


def ref_tsv(tvs, orth=ref_procrustes, boost=None):  # TSVM_utils.compute_and_sum_svd_mem_reduction, one key
    sv_reduction = 1 / len(tvs)
    for i, vec in enumerate(tvs):
        u, s, v = torch.linalg.svd(vec, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        r = int(s.shape[0] * sv_reduction)
        kept = s[:r] if boost is None else boost(s[:r].clone())
        sum_u[:, i * r:(i + 1) * r] = u[:, :r]
        sum_s[i * r:(i + 1) * r] = kept
        sum_v[i * r:(i + 1) * r, :] = v[:r, :]
    return torch.linalg.multi_dot((orth(sum_u), torch.diag(sum_s), orth(sum_v)))


def ref_boost(beta):  # algorithms.md BoostedTSV-M, energy σ², over the retained values, written as a loop
    def boost(s):
        total = float((s ** 2).sum())
        running = 0.0
        for j in range(len(s)):
            running += float(s[j] ** 2)
            if running / total >= beta:
                return torch.maximum(s, s[j])
        return s
    return boost


def ref_iso_c(tvs):  # iso_utils.iso_c
    merged = sum(tvs) / len(tvs) * len(tvs)
    U, S, V = torch.linalg.svd(merged, full_matrices=False)
    return torch.linalg.multi_dot((U, torch.diag(torch.ones_like(S) * S.mean()), V))


def ref_iso_cts(tvs, fraction):  # iso_utils.iso_cts
    shape_ = tvs[0].shape
    combined = sum(tvs)
    common = int(min(shape_) * fraction)
    ts_total = round((min(shape_) - common) / len(tvs)) * len(tvs)
    common = min(shape_) - ts_total
    u, s, v = torch.linalg.svd(combined, full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    per = int((min(shape_) - common) / len(tvs))
    for i, w in enumerate(tvs):
        w_ts = w - cu @ cu.T @ w
        ut, st, vt = torch.linalg.svd(w_ts, full_matrices=False)
        if i == 0:
            U, S, V = torch.zeros_like(ut), torch.zeros_like(st), torch.zeros_like(vt)
        U[:, i * per:(i + 1) * per] = ut[:, :per]
        S[i * per:(i + 1) * per] = st[:per]
        V[i * per:(i + 1) * per, :] = vt[:per, :]
    n = len(tvs) * per
    U[:, n:n + common], S[n:n + common], V[n:n + common, :] = cu, cs, cv
    U, V = ref_procrustes(U), ref_procrustes(V)
    return torch.linalg.multi_dot((U, torch.diag(torch.ones_like(S) * S.mean()), V))


def ref_star(matrix, eta):  # IBM/STAR merger/STAR.py::star
    u, s, vt = torch.linalg.svd(matrix, full_matrices=False)
    total = torch.sum(s)
    keep = torch.searchsorted(torch.cumsum(s, dim=0), total * eta / 100).item() + 1
    remain = s[:keep]
    return u[:, :keep] @ torch.diag_embed((total / remain.sum()) * remain) @ vt[:keep, :]


def ref_magnitude_outliers(tensor, density, gamma):  # mergekit sparsify.magnitude_outliers
    n = tensor.numel()
    target, n_top = int(density * n), int(gamma * n)
    n_bot = max(0, n - target - n_top)
    idx = torch.sort(tensor.abs().reshape(-1), descending=False, stable=True).indices
    mask = torch.zeros(n, dtype=tensor.dtype)
    mask[idx[n_bot:n_bot + target]] = 1
    return tensor * mask.reshape_as(tensor)


def ref_l1(tensor, masked, eps=1e-7):  # mergekit rescaled_masked_tensor(norm=l1)
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def ref_della_probs(tensor, density, epsilon):  # mergekit della_magprune up to the Bernoulli draw
    t = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    ranks = torch.argsort(t.abs(), dim=1, stable=True).argsort(dim=1, stable=True).to(F64) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    return ((density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon).reshape(tensor.shape)


def ref_consensus(tvs, lam, k):  # IBM/STAR merger/tall_mask.py, scaling_factor 1
    mtl = sum(tvs)
    agree = sum((tv.abs() > (mtl - tv).abs() * lam).int() for tv in tvs)
    return (agree >= k).int() * mtl


# ======================================================================================= reference equivalence


@pytest.mark.parametrize("shape", [(6, 7), (5, 4, 3), (9,)])
def test_model_soup(shape) -> None:
    tvs, base = make(shape, 4)
    thetas = [(base + tv).double() for tv in tvs]
    assert rel_err(base + run("model_soup", tvs, base), ref_linear(thetas)) < TOL


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("shape", [(6, 7), (4, 3, 2), (9,)])
def test_model_stock(shape, filter_wise) -> None:
    tvs, base = make(shape, 3)
    thetas = [(base + tv).double() for tv in tvs]
    want = ref_model_stock(base.double(), thetas, filter_wise)
    assert rel_err(base + run("model_stock", tvs, base, filter_wise=filter_wise), want) < TOL


@pytest.mark.parametrize("shape", [(6, 7), (12,)])
def test_karcher(shape) -> None:
    tvs, base = make(shape, 4)
    thetas = [(base + tv).double() for tv in tvs]
    assert rel_err(base + run("karcher", tvs, base), ref_karcher(thetas)) < TOL
    assert rel_err(base + run("karcher", tvs, base, max_iter=3), ref_karcher(thetas, max_iter=3)) < TOL


@pytest.mark.parametrize("shape", [(6, 7), (3, 2, 2)])
def test_multislerp(shape) -> None:
    tvs, base = make(shape, 4)
    thetas = [(base + tv).double() for tv in tvs]
    assert rel_err(base + run("multislerp", tvs, base), ref_multislerp(thetas, base.double())) < TOL


def test_multislerp_without_base_uses_raw_weights() -> None:
    tvs, base = make((5, 5), 3)
    thetas = [(base + tv).double() for tv in tvs]
    zero = torch.zeros_like(base, dtype=F64)
    want = ref_multislerp(thetas, zero)
    assert rel_err(base + run("multislerp", tvs, base, use_base=False), want) < TOL


def test_task_arithmetic() -> None:
    tvs, base = make((6, 7), 5)
    assert rel_err(run("task_arithmetic", tvs, base), ref_gta(tvs.double(), consensus=False, normalize=False)) < TOL


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_ties_tensor_scope_is_mergekit(density, aggregation) -> None:
    tvs, base = make((8, 9), 4)
    trimmed = torch.stack([ref_magnitude(tv.double(), density) for tv in tvs])
    want = ref_gta(trimmed, consensus=True, normalize=aggregation == "mean")
    assert rel_err(run("ties", tvs, base, density=density, aggregation=aggregation), want) < TOL


@pytest.mark.parametrize("density", [0.2, 0.35, 1.0])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_ties_global_scope_is_fusionbench(density, aggregation) -> None:
    tvs, base = make((300,), 4)
    if density == 1.0:
        # FusionBench cannot take density 1 (kthvalue(0)); ours keeps everything
        want = ref_ties_fusionbench(tvs.double(), 0.999999, aggregation)
    else:
        want = ref_ties_fusionbench(tvs.double(), density, aggregation)
    got = run("ties", tvs, base, density=density, scope="global", aggregation=aggregation)
    assert rel_err(got, want) < TOL


@pytest.mark.parametrize("ratio", [0.1, 0.05, 0.5])
def test_pcb_is_official(ratio) -> None:
    tvs, base = make((40, 60), 4)
    want = ref_pcb(tvs.reshape(4, -1).double(), ratio).reshape(40, 60)
    assert rel_err(run("pcb", tvs, base, pcb_ratio=ratio), want) < TOL


@pytest.mark.parametrize("select_topk", [1.0, 0.3])
def test_sce_is_mergekit(select_topk) -> None:
    tvs, base = make((8, 9), 4)
    assert rel_err(run("sce", tvs, base, select_topk=select_topk), ref_sce(tvs.double(), select_topk)) < TOL


@pytest.mark.parametrize("select_topk", [1.0, 0.5])
def test_sce_slices_change_nothing(monkeypatch, select_topk) -> None:
    """SCE goes through a tensor in slices: several (odd-sized) slices per tensor give the same merge."""
    from asrmerge.merging.methods import task_space

    tvs, base = make((8, 9), 4)
    whole = run("sce", tvs, base, select_topk=select_topk)
    monkeypatch.setattr(task_space, "SLICE_ENTRIES", 5)
    torch.testing.assert_close(run("sce", tvs, base, select_topk=select_topk), whole, rtol=1e-6, atol=1e-9)


def test_sce_uniform_weights_below_weight_eps() -> None:
    tvs, base = make((8, 9), 3, scale=1e-4)  # Σ mean(τ²) ≈ 4e-8 < 1e-6: mergekit falls back to uniform weights
    erase_only = run("sce", tvs, base)
    weighted = run("sce", tvs, base, weight_eps=0.0)
    assert rel_err(weighted, ref_sce(tvs.double(), 1.0)) < TOL
    assert rel_err(erase_only, weighted) > 1e-4


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (16, 16)])
def test_iso_c_is_official(shape) -> None:
    tvs, base = make_spectral(shape, 4)
    got = run("iso_c", tvs, base)
    assert rel_err(got, ref_iso_c(list(tvs.double()))) < TOL
    s = torch.linalg.svdvals(got.double())
    assert torch.allclose(s, s.mean().expand_as(s), rtol=1e-4)  # isotropic spectrum


@pytest.mark.parametrize("shape,num_tasks,fraction", [((12, 20), 4, 0.8), ((20, 12), 3, 0.8), ((16, 16), 5, 0.5)])
def test_iso_cts_is_official(shape, num_tasks, fraction) -> None:
    tvs, base = make_spectral(shape, num_tasks)
    got = run("iso_cts", tvs, base, common_space_fraction=fraction)
    assert rel_err(got, ref_iso_cts(list(tvs.double()), fraction)) < TOL


@pytest.mark.parametrize("shape,num_tasks", [((12, 20), 4), ((20, 12), 3), ((16, 16), 1), ((30, 24), 3), ((16, 16), 5),
                                              ((13, 20), 4)])
def test_tsv_m_is_official(shape, num_tasks) -> None:
    tvs, base = make_spectral(shape, num_tasks)
    assert rel_err(run("tsv_m", tvs, base), ref_tsv(list(tvs.double()))) < TOL


@pytest.mark.parametrize("shape,num_tasks", [((16, 16), 5), ((13, 20), 4), ((20, 12), 3)])
def test_tsv_m_float64_svd(shape, num_tasks) -> None:
    """Gaussian task vectors, r not divisible by T (slot r − T·k stays empty): float64 SVDs (svd_dtype) remove the
    float32 sensitivity of truncated singular subspaces, so the agreement is limited only by the float32 inputs."""
    tvs, base = make(shape, num_tasks)
    got = get_method("tsv_m").fn(tvs, base, svd_dtype=F64)
    assert got.dtype == torch.float32
    assert rel_err(got, ref_tsv(list(tvs.double()))) < TOL


def test_tsv_m_newton_schulz() -> None:
    tvs, base = make_spectral((12, 20), 4)
    want = ref_tsv(list(tvs.double()), orth=ref_newton_schulz)
    assert rel_err(run("tsv_m", tvs, base, orthogonaliser="newton_schulz"), want) < TOL


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.7])
def test_boosted_tsv_m(beta) -> None:
    tvs, base = make_spectral((24, 30), 3)
    want = ref_tsv(list(tvs.double()), orth=ref_newton_schulz, boost=ref_boost(beta))
    assert rel_err(run("boosted_tsv_m", tvs, base, beta=beta), want) < TOL
    want_svd = ref_tsv(list(tvs.double()), boost=ref_boost(beta))
    assert rel_err(run("boosted_tsv_m", tvs, base, beta=beta, orthogonaliser="svd"), want_svd) < TOL


def test_boosted_energy_options() -> None:
    from asrmerge.merging.methods.subspace import boost_spectrum

    s = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25, 0.1])
    kept = s[:4]
    # squared energy over retained: cumulative 16/21.25 = 0.75 ≥ 0.3 → j* = 0, all lifted to 4
    assert torch.equal(boost_spectrum(kept, s, 0.3, "squared", "retained"), torch.full((4,), 4.0))
    # linear energy over retained: 4/7.5 = 0.53 < 0.6, 6/7.5 = 0.8 ≥ 0.6 → j* = 1
    assert torch.equal(boost_spectrum(kept, s, 0.6, "linear", "retained"), torch.tensor([4.0, 2.0, 2.0, 2.0]))
    # full-spectrum energy never reached within the retained values → nothing lifted
    assert torch.equal(boost_spectrum(kept, s, 0.99, "linear", "full"), kept)
    assert torch.equal(boost_spectrum(kept, s, 1.0, "squared", "retained"), kept)
    assert torch.equal(boost_spectrum(torch.zeros(3), torch.zeros(3), 0.3, "squared", "retained"), torch.zeros(3))


@pytest.mark.parametrize("eta", [40.0, 90.0, 100.0])
def test_star_is_official(eta) -> None:
    tvs, base = make_spectral((12, 20), 3)
    want = torch.stack([ref_star(tv.double(), eta) for tv in tvs]).mean(dim=0)
    assert rel_err(run("star", tvs, base, eta=eta), want) < TOL


@pytest.mark.parametrize("p,rescale,then", [(0.5, "inverse_keep", "task_arithmetic"), (0.3, "l1_match", "task_arithmetic"),
                                            (0.5, "inverse_keep", "ties"), (0.7, "l1_match", "ties")])
def test_dare(p, rescale, then) -> None:
    tvs, base = make((10, 12), 3)
    uniform = torch.rand(tvs.shape, generator=torch.Generator().manual_seed(5))
    dropped = tvs.double() * (uniform < 1 - p)
    if rescale == "inverse_keep":  # FusionBench param_random_drop_(rescale=True)
        dropped = dropped / (1 - p)
    else:
        dropped = torch.stack([ref_l1(tv.double(), d) for tv, d in zip(tvs, dropped)])
    want = ref_gta(dropped, consensus=then == "ties", normalize=False)
    got = run("dare", tvs, base, seed=5, p=p, rescale=rescale, then=then)
    assert rel_err(got, want) < TOL


def test_dare_statistics_and_p_zero() -> None:
    tvs, base = make((200, 200), 1)
    got = run("dare", tvs, base, p=0.9)
    kept = float((got != 0).double().mean())
    assert abs(kept - 0.1) < 0.01
    torch.testing.assert_close(got[got != 0], tvs[0][got != 0] / 0.1)
    assert torch.equal(run("dare", tvs, base, p=0.0), tvs[0])


@pytest.mark.parametrize("density,gamma", [(0.9, 0.01), (0.5, 0.1), (0.2, 0.0), (1.0, 0.05)])
def test_breadcrumbs_is_mergekit(density, gamma) -> None:
    tvs, base = make((10, 30), 3)
    want = sum(ref_magnitude_outliers(tv.double(), density, gamma) if density < 1 else tv.double() for tv in tvs)
    assert rel_err(run("breadcrumbs", tvs, base, density=density, gamma=gamma), want) < TOL


@pytest.mark.parametrize("density,gamma", [(0.9, 0.01), (0.5, 0.1), (0.3, 0.3)])
def test_breadcrumbs_with_many_equal_magnitudes_is_the_stable_sort(density, gamma) -> None:
    """Few distinct |τ| (so equal values straddle both ends of the kept rank range): still mergekit's stable sort."""
    gen = torch.Generator().manual_seed(5)
    tvs = (torch.randint(-4, 5, (3, 12, 25), generator=gen) * 0.25).float()
    want = sum(ref_magnitude_outliers(tv.double(), density, gamma) for tv in tvs)
    assert torch.equal(run("breadcrumbs", tvs, torch.zeros(12, 25), density=density, gamma=gamma), want.float())


@pytest.mark.parametrize("shape", [(8, 30), (50,), (4, 6, 3)])
def test_della_is_mergekit(shape) -> None:
    density, epsilon = 0.4, 0.15
    tvs, base = make(shape, 3)
    gen = torch.Generator().manual_seed(11)
    rows = []
    for tv in tvs:
        probs = ref_della_probs(tv.double(), density, epsilon)
        mask = torch.rand(tv.shape, generator=gen).double() < probs
        rows.append(ref_l1(tv.double(), tv.double() * mask))
    want = ref_gta(torch.stack(rows), consensus=True, normalize=True)
    got = run("della", tvs, base, seed=11, density=density, epsilon=epsilon)
    assert rel_err(got, want) < TOL


@pytest.mark.parametrize("lam,k", [(0.6, 2), (0.3, 1), (0.5, 3)])
def test_consensus_ta_is_tall_mask(lam, k) -> None:
    tvs, base = make((10, 12), 4)
    want = ref_consensus(list(tvs.double()), lam, k)
    assert rel_err(run("consensus_ta", tvs, base, lambda_mask=lam, k=k), want) < TOL


# ============================================================================================== known values


def test_known_values() -> None:
    tvs, base = make((6, 8), 3)
    same = tvs[:1].expand(3, -1, -1).clone()
    torch.testing.assert_close(run("model_soup", same, base), same[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run("model_stock", same, base), same[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run("karcher", same, base), same[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run("multislerp", same, base), same[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run("task_arithmetic", tvs, base), tvs.sum(dim=0))
    # TIES with density 1 and no sign conflicts is the mean
    positive = tvs.abs()
    torch.testing.assert_close(run("ties", positive, base, density=1.0), positive.mean(dim=0))
    torch.testing.assert_close(run("ties", positive, base, density=1.0, scope="global"), positive.mean(dim=0))
    # boosted with β = 1 is TSV-M
    torch.testing.assert_close(run("boosted_tsv_m", tvs, base, beta=1.0), run("tsv_m", tvs, base, orthogonaliser="newton_schulz"))
    # STAR at 100 % is the mean; Iso-C keeps the nuclear norm of Σ τ_t (r·mean(S) = Σ S)
    torch.testing.assert_close(run("star", tvs, base, eta=100.0), tvs.mean(dim=0), rtol=1e-4, atol=1e-5)
    nuclear = torch.linalg.matrix_norm(tvs.sum(dim=0), ord="nuc")
    torch.testing.assert_close(torch.linalg.matrix_norm(run("iso_c", tvs, base), ord="nuc"), nuclear, rtol=1e-5, atol=0)


def test_tsv_m_orthogonal_tasks_are_reconstructed() -> None:
    """Tasks with disjoint row/column supports and rank ≤ k are recovered exactly: τ = Σ τ_t."""
    gen = torch.Generator().manual_seed(3)
    tvs = torch.zeros(3, 12, 12)
    for t in range(3):
        block = torch.randn(4, 2, generator=gen) @ torch.randn(2, 4, generator=gen)
        tvs[t, 4 * t:4 * t + 4, 4 * t:4 * t + 4] = block
    torch.testing.assert_close(run("tsv_m", tvs, torch.zeros(12, 12)), tvs.sum(dim=0), rtol=1e-4, atol=1e-5)


# ================================================================================================ linalg


@pytest.mark.parametrize("shape", [(10, 4), (4, 10), (7, 7)])
def test_polar_factor(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    q = polar_factor(x, "svd")
    assert rel_err(q, ref_procrustes(x.double())) < TOL
    assert torch.allclose(torch.linalg.svdvals(q), torch.ones(min(shape)), atol=1e-5)
    q64 = polar_factor(x.double(), "svd", svd_dtype=F64)
    assert q64.dtype == F64 and rel_err(q64, ref_procrustes(x.double())) < 1e-12
    ns = polar_factor(x, "newton_schulz")
    assert rel_err(ns, ref_newton_schulz(x.double())) < TOL
    s = torch.linalg.svdvals(ns)
    assert float(s.min()) > 0.6 and float(s.max()) < 1.25  # NS lands near 1, not at 1
    assert orthogonality_error(ns) == pytest.approx(float((s - 1).abs().max()))
    half = polar_factor(x.half(), "newton_schulz")
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="orthogonaliser"):
        polar_factor(x, "qr")


@pytest.mark.parametrize("shape,k", [((40, 120), 6), ((120, 40), 6), ((48, 48), 12), ((30, 90), 30)])
def test_top_singular_triplets_from_the_gram_matrix_equal_the_svd(shape, k) -> None:
    """The Gram–eigh path gives the SVD's top-k triplets (up to a joint sign per pair) and its whole spectrum."""
    from asrmerge.merging.linalg import thin_svd, top_singular_triplets

    x, _ = make_spectral(shape, 1)
    x = x[0]
    u_ref, s_ref, vh_ref = thin_svd(x.double(), F64)
    *with_spectrum, spectrum = top_singular_triplets(x, k, whole_spectrum=True)
    assert [t.shape for t in with_spectrum] == [(shape[0], k), (k,), (k, shape[1])]
    assert spectrum.shape == (min(shape),) and {t.dtype for t in with_spectrum} == {torch.float32}
    torch.testing.assert_close(spectrum.double(), s_ref, rtol=1e-5, atol=1e-6 * float(s_ref[0]))
    *top_only, no_spectrum = top_singular_triplets(x, k)  # the top eigenpairs alone (syevr): the same triplets
    assert no_spectrum is None
    for u, s, vh in (with_spectrum, top_only):
        torch.testing.assert_close(s.double(), s_ref[:k], rtol=1e-5, atol=1e-6 * float(s_ref[0]))
        signs = torch.sign((u.double() * u_ref[:, :k]).sum(dim=0))
        torch.testing.assert_close(u.double() * signs, u_ref[:, :k], rtol=0, atol=1e-5)
        torch.testing.assert_close(vh.double() * signs[:, None], vh_ref[:k], rtol=0, atol=1e-5)


def test_lapack_eigh_of_a_symmetric_matrix_equals_numpy() -> None:
    """LAPACK dsyevr through scipy's C-level capsule: every eigenpair, or the top k alone, as numpy's eigh."""
    import numpy as np

    from asrmerge.merging.linalg import _symmetric_eigh

    x = np.random.default_rng(3).standard_normal((60, 40))
    gram = x.T @ x
    ref_values, ref_vectors = np.linalg.eigh(gram)
    for top in (None, 7):
        values, vectors = _symmetric_eigh(gram.copy(), top)
        k = 40 if top is None else top
        assert values.shape == (k,) and vectors.shape == (40, k)
        np.testing.assert_allclose(values, ref_values[40 - k :], rtol=1e-12)
        np.testing.assert_allclose(np.abs(vectors.T @ ref_vectors[:, 40 - k :]), np.eye(k), atol=1e-10)


def test_gram_paths_fall_back_to_the_svd_on_rank_deficient_input(monkeypatch) -> None:
    """A top-k reaching below GRAM_MIN_SINGULAR_RATIO, or a rank-deficient polar input, takes the direct SVD."""
    from asrmerge.merging import linalg

    gen = torch.Generator().manual_seed(5)
    low_rank = torch.randn(20, 3, generator=gen) @ torch.randn(3, 30, generator=gen)  # rank 3
    calls = []
    real = linalg.thin_svd
    monkeypatch.setattr(linalg, "thin_svd", lambda x, dtype=None: calls.append(tuple(x.shape)) or real(x, dtype))
    u, s, vh, _ = linalg.top_singular_triplets(low_rank, 3)
    assert calls == []  # σ_3 is well above the threshold: the Gram path
    torch.testing.assert_close((u * s) @ vh, low_rank, rtol=1e-5, atol=1e-5)
    u, s, vh, _ = linalg.top_singular_triplets(low_rank, 5)
    assert calls == [(20, 30)] and u.shape == (20, 5)
    torch.testing.assert_close((u * s) @ vh, low_rank, rtol=1e-5, atol=1e-5)
    q = linalg.svd_polar_factor(low_rank)
    assert calls == [(20, 30), (20, 30)]
    u, _, vh = real(low_rank)  # the factor is not unique: the SVD's own choice
    assert torch.equal(q, u @ vh)
    full = torch.randn(20, 30, generator=gen)
    assert rel_err(linalg.svd_polar_factor(full), ref_procrustes(full.double())) < TOL
    assert len(calls) == 2


def test_zero_matrix_orthogonalisers_are_finite() -> None:
    zero = torch.zeros(5, 3)
    assert torch.equal(newton_schulz(zero), zero)
    assert torch.isfinite(polar_factor(zero, "svd")).all()


def test_effective_rank() -> None:
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4)) == 0.0
    assert 1.0 < effective_rank(torch.tensor([4.0, 1.0])) < 2.0


# ============================================================================================== edge cases


def _check(name: str, tvs: torch.Tensor, base: torch.Tensor, **params) -> torch.Tensor:
    out = run(name, tvs, base, **params)
    assert out.shape == base.shape, name
    assert torch.isfinite(out).all(), name
    return out


@pytest.mark.parametrize("name", ALL_METHODS)
def test_edge_cases(name: str) -> None:
    # T = 1
    tvs, base = make((6, 9), 1)
    _check(name, tvs, base)
    # all-zero task vectors: no NaN, and task-vector methods return 0
    zero = torch.zeros(3, 6, 9)
    out = _check(name, zero, base)
    # task-vector methods give exactly 0; parameter-space ones give θ₀ back up to round-off
    assert float(out.abs().max()) <= 1e-6 * float(base.abs().max()), name
    # 1-D, 3-D, scalar-like and non-square tensors
    for shape in [(7,), (4, 3, 2), (1,), (3, 11), (11, 3)]:
        tvs, base = make(shape, 3)
        out = _check(name, tvs, base)
        if get_method(name).matrix_only and len(shape) != 2:
            torch.testing.assert_close(out, tvs.mean(dim=0))
    # rank < T (r = 2, T = 4), r not divisible by T
    for shape, t in [((2, 9), 4), ((7, 10), 3)]:
        tvs, base = make(shape, t)
        _check(name, tvs, base)
    # float64 inputs stay float64
    tvs, base = make((5, 6), 3)
    assert run(name, tvs.double(), base.double()).dtype == F64


def test_rank_below_task_count_keeps_one_component_each() -> None:
    tvs, base = make((3, 12), 5)  # r = 3 < T = 5: floor(r/T) = 0
    default = run("tsv_m", tvs, base)
    assert torch.count_nonzero(default) > 0
    assert torch.count_nonzero(run("tsv_m", tvs, base, min_rank_per_task=0)) == 0  # the reference's zero update
    assert torch.linalg.matrix_rank(default.double()) <= 3


def test_karcher_resolves_small_angles_in_float32() -> None:
    """Fine-tunes of a layer-norm weight (all near 1) are ~1e-4 rad apart: below what arccos resolves in float32.
    The float32 merge still lands on the float64 Karcher mean (mergekit's formula drifts by ~1e-3 there)."""
    gen = torch.Generator().manual_seed(2)
    base = torch.ones(768)
    tvs = torch.randn(10, 768, generator=gen) * 2e-4
    tvs[:, ::97] += 1e-2
    want = ref_karcher([(base + tv).double() for tv in tvs], max_iter=50, tol=1e-12)
    got = base.double() + run("karcher", tvs, base).double()
    assert float((got - want).abs().max()) < 1e-6


def test_karcher_zero_inputs_match_reference() -> None:
    base = torch.randn(4, 4)
    out = run("karcher", torch.stack([-base, -base]), base)  # all θ_t = 0 → merged θ = 0
    torch.testing.assert_close(base + out, torch.zeros(4, 4))


def test_random_methods_need_and_follow_generator() -> None:
    tvs, base = make((8, 8), 3)
    for name in ("dare", "della"):
        method = get_method(name)
        assert method.uses_rng
        with pytest.raises(ValueError, match="generator"):
            method.fn(tvs, base, **resolve_params(method))
        a = run(name, tvs, base, seed=1)
        assert torch.equal(a, run(name, tvs, base, seed=1))
        assert not torch.equal(a, run(name, tvs, base, seed=2))


# ============================================================================================ method contract


@pytest.mark.parametrize("name", [m.name for m in list_methods()])  # every registered method, new ones included
@pytest.mark.parametrize("shape", [(12, 7), (9,)])
def test_every_method_keeps_the_contract(name: str, shape: tuple[int, ...]) -> None:
    """The registry's method contract: inputs read-only, result of the base's shape and finite, and for SVD methods
    the same bytes whichever per-task map the executor hands in."""
    from asrmerge.merging.runtime import map_side_by_side

    tvs, base = make(shape, 4, seed=3)
    tvs_before, base_before = tvs.clone(), base.clone()
    merged = run(name, tvs, base, seed=0)
    assert torch.equal(tvs, tvs_before) and torch.equal(base, base_before), f"{name} wrote into its inputs"
    assert merged.shape == base.shape and merged.device == base.device and torch.isfinite(merged).all()
    method = get_method(name)
    if method.uses_svd:
        side_by_side = method.fn(tvs, base, **resolve_params(method), map_tasks=map_side_by_side)
        assert torch.equal(side_by_side, merged)


def test_a_worker_maps_its_tasks_in_place() -> None:
    """map_side_by_side called from inside a pool worker runs in that worker (it never waits on its own pool), and
    context variables follow the calls into the pool."""
    import contextvars

    from asrmerge.merging.runtime import in_worker, map_side_by_side, side_by_side_pool

    seen = contextvars.ContextVar("seen", default=None)

    def inner(item: int) -> tuple[int, bool, object]:
        return item * item, in_worker(), seen.get()

    def job() -> list:
        return list(map_side_by_side(inner, range(5)))

    assert side_by_side_pool(2).submit(job).result(timeout=60) == [(i * i, True, None) for i in range(5)]
    token = seen.set("outer")
    try:
        assert [value for *_, value in map_side_by_side(inner, range(3))] == ["outer"] * 3
    finally:
        seen.reset(token)


# ================================================================================================== registry


def test_registry_contents() -> None:
    assert set(ALL_METHODS) <= set(REGISTRY)
    assert [m.name for m in list_methods()][:4] == ["karcher", "model_soup", "model_stock", "multislerp"]
    for method in list_methods():
        assert method.reference and method.summary, method.name
        assert (method.statistics is not None) == (method.family == "data_aware")
        assert method.fn.__doc__, method.name
    assert get_method("ties").default_lambdas == TASK_VECTOR_LAMBDAS and len(TASK_VECTOR_LAMBDAS) == 10
    assert get_method("tsv_m").default_lambdas == SUBSPACE_LAMBDAS and SUBSPACE_LAMBDAS[-1] == 3.0
    assert len(SUBSPACE_LAMBDAS) == 30 and math.isclose(SUBSPACE_LAMBDAS[0], 0.1)
    assert get_method("karcher").default_lambdas == (1.0,)
    assert get_method("tsv_m").matrix_only and not get_method("ties").matrix_only
    assert get_method("boosted_tsv_m").params["orthogonaliser"].default == "newton_schulz"


def test_signature_default_that_drifts_from_its_paramspec_is_refused_at_declaration() -> None:
    from asrmerge.merging.spec import declare

    def drifted(task_vectors, base, *, generator=None, density: float = 0.5):
        """A method whose signature says 0.5 while its declaration says 0.2."""

    with pytest.raises(ValueError, match=r"defaults density=0.5, its ParamSpec 0.2"):
        declare("drifted", family="task_vector", params={"density": ParamSpec(0.2, "float")})(drifted)
    with pytest.raises(ValueError, match="'rate' is not a keyword of drifted"):
        declare("drifted", family="task_vector", params={"rate": ParamSpec(0.2, "float")})(drifted)
    assert "drifted" not in REGISTRY


def test_registry_collects_each_declared_method_once_where_it_is_defined() -> None:
    import types

    from asrmerge.merging.registry import METHOD_MODULES, collect
    from asrmerge.merging.spec import declare

    # subspace imports task_space's ties: counted once, in task_space
    assert sum(1 for module in METHOD_MODULES if "ties" in collect((module,))) == 1
    twice = []
    for module_name in ("family_a", "family_b"):
        module = types.ModuleType(module_name)

        def same_name(task_vectors, base, *, generator=None):
            """A method two modules declare under one name."""

        same_name.__module__ = module_name
        module.same_name = declare("same_name", family="task_vector")(same_name)
        twice.append(module)
    assert list(collect(tuple(twice[:1]))) == ["same_name"]
    with pytest.raises(ValueError, match="'same_name' is declared twice"):
        collect(tuple(twice))


def test_get_method_unknown_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown merge method 'tsvm'.*tsv_m"):
        get_method("tsvm")


def test_resolve_params_defaults_and_coercion() -> None:
    assert resolve_params("ties") == {"density": 0.2, "scope": "tensor", "aggregation": "mean"}
    assert resolve_params("ties", {"density": 1}) ["density"] == 1.0
    assert resolve_params("tsv_m", {"ns_steps": 7.0})["ns_steps"] == 7


@pytest.mark.parametrize(
    "method,params,fragment",
    [
        ("ties", {"densty": 0.3}, "unknown parameter 'densty'"),
        ("ties", {"density": 0.0}, r"'density'=0.0 is out of range; allowed: float in \(0.0, 1.0\]"),
        ("ties", {"density": 1.5}, "'density'=1.5"),
        ("ties", {"scope": "layer"}, "one of 'tensor', 'global'"),
        ("boosted_tsv_m", {"beta": 0.0}, r"'beta'=0.0 .*\(0.0, 1.0\]"),
        ("dare", {"p": 1.0}, r"'p'=1.0 .*\[0.0, 1.0\)"),
        ("tsv_m", {"ns_steps": 2.5}, "'ns_steps'=2.5 is invalid"),
        ("tsv_m", {"orthogonaliser": True}, "'orthogonaliser'=True is invalid"),
        ("model_stock", {"filter_wise": 1}, "expected a bool"),
        ("della", {"density": 0.1, "epsilon": 0.15}, "density ± epsilon"),
    ],
)
def test_resolve_params_errors(method, params, fragment) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        resolve_params(method, params)
    assert repr(method) in str(info.value)


def test_param_spec_parse_and_allowed() -> None:
    spec = ParamSpec(True, "bool")
    assert spec.parse("yes") is True and spec.parse("0") is False
    with pytest.raises(ValueError):
        spec.parse("maybe")
    assert ParamSpec(1, "int", minimum=0).allowed() == "int in [0, inf)"
    assert ParamSpec(0.5, "float", minimum=0.0, maximum=1.0, max_inclusive=False).parse("0.25") == 0.25
    with pytest.raises(ValueError, match="kind"):
        ParamSpec(1, "complex")


def test_dare_draws_one_block_per_tensor() -> None:
    """DARE draws task by task, which gives the numbers of one (T, *shape) block (the generator is sequential)."""
    tvs, base = make((6, 5), 4, seed=11)
    for params in ({"p": 0.3}, {"p": 0.6, "rescale": "l1_match"}, {"p": 0.5, "then": "ties"}):
        got = run("dare", tvs, base, seed=9, **params)
        keep = (torch.rand(tvs.shape, generator=torch.Generator().manual_seed(9)) < 1 - params["p"]).float()
        dropped = tvs * keep
        if params.get("rescale") == "l1_match":
            dropped = torch.stack([d * (t.abs().sum() / d.abs().sum()) for t, d in zip(tvs, dropped)])
        else:
            dropped = dropped / (1 - params["p"])
        if params.get("then") == "ties":
            sign = torch.where(dropped.sum(0) >= 0, 1.0, -1.0)
            want = (dropped * (torch.sign(dropped) == sign)).sum(0)
        else:
            want = dropped.sum(0)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_selection_paths_match_sorting_with_ties() -> None:
    """magnitude_topk / magnitude_outliers / PCB bounds find their sets by selection; with many exactly equal |x|
    (quantized values, as θ_t − θ₀ in float32 gives) they fall back to the sort / topk order: same results."""
    from asrmerge.merging.methods.sparsify import magnitude_outliers, magnitude_topk, order_statistics

    gen = torch.Generator().manual_seed(3)
    for values in (torch.randn(4001, generator=gen), torch.randint(-20, 21, (4001,), generator=gen).float() / 7):
        for density in (0.1, 0.5, 0.9):
            k = max(1, int(density * values.numel()))
            mask = torch.zeros(values.numel())
            mask[torch.topk(values.abs(), k, sorted=False).indices] = 1
            assert torch.equal(magnitude_topk(values, density), values * mask)
            for gamma in (0.0, 0.01, 0.2):
                n = values.numel()
                target, n_top = int(density * n), int(gamma * n)
                bottom = max(0, n - target - n_top)
                keep = torch.zeros(n)
                keep[torch.sort(values.abs(), stable=True).indices[bottom : bottom + target]] = 1
                assert torch.equal(magnitude_outliers(values, density, gamma), values * keep)
        positions = [0, 17, 2000, 4000]
        assert torch.equal(order_statistics(values, positions), torch.sort(values).values[positions])


def test_thin_svd_retries_in_float64_when_lapack_fails(monkeypatch) -> None:
    """A float32 SVD that does not converge is computed again in float64 (results in the input's dtype)."""
    from asrmerge.merging.linalg import thin_svd

    real_svd = torch.linalg.svd
    calls = []

    def svd_failing_in_float32(a, full_matrices=True):
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(a, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", svd_failing_in_float32)
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(3))
    u, s, vh = thin_svd(x)
    assert calls == [torch.float32, torch.float64] and u.dtype == s.dtype == vh.dtype == torch.float32
    assert u.shape == (6, 6) and vh.shape == (6, 9)
    torch.testing.assert_close((u * s) @ vh, x, rtol=1e-5, atol=1e-5)

    def svd_failing(a, full_matrices=True):
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", svd_failing)
    with pytest.raises(torch.linalg.LinAlgError):  # already float64: nothing to retry in
        thin_svd(x, torch.float64)


def ref_knots(tvs: torch.Tensor, top_k: float) -> torch.Tensor:
    """Official KnOTS (task_merger.SVDMerger.apply_svd + masking_ops.ties_masking + masked_merge "mean") on one layer,
    float64: SVD of [ΔW_1 … ΔW_T], s > 1e-5, blocks diag(s)·V_t, top-k mask per task (kthvalue), sign of the sum
    (zeros to the majority sign), disjoint mean, U · merged."""
    n, rows, cols = tvs.shape
    u, s, v = torch.linalg.svd(torch.cat(list(tvs.double()), dim=1), full_matrices=False)
    u, v, s = u[:, s > 1e-5], v[s > 1e-5], s[s > 1e-5]
    blocks = [torch.diag(s) @ block for block in torch.split(v, cols, dim=1)]
    stacked = torch.vstack([b.reshape(-1) for b in blocks])
    d = stacked.shape[1]
    kth = stacked.abs().kthvalue(d - int(d * top_k), dim=1, keepdim=True).values
    pruned = stacked * (stacked.abs() >= kth)
    sign = torch.sign(pruned.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    masked = pruned * torch.where(sign.unsqueeze(0) > 0, pruned > 0, pruned < 0)
    merged = masked.sum(dim=0) / (masked != 0).sum(dim=0).clamp(min=1)
    return u @ merged.reshape(len(s), cols)


@pytest.mark.parametrize("shape", [(12, 7), (6, 20)])
def test_knots_equals_the_official_algorithm_on_one_layer(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(4)
    # LoRA-like updates: rank 2 per task
    tvs = torch.stack([torch.randn(shape[0], 2, generator=gen) @ torch.randn(2, shape[1], generator=gen) for _ in range(3)])
    base = torch.randn(shape)
    got = run("knots", tvs, base, density=0.2)
    assert rel_err(got, ref_knots(tvs, 0.2)) < 1e-5
    assert torch.equal(run("knots", tvs[:, 0], base[0]), tvs[:, 0].mean(0))  # non-matrices: the mean
