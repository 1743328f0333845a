"""Parameter-space merges: Model Soup, Model Stock, Karcher mean, Multi-SLERP.

They operate on the fine-tuned weights θ_t = θ₀ + τ_t and return θ_merged − θ₀, so that θ₀ + 1·τ reproduces the
parameter-space merge (their λ grid is (1.0,)).
"""

from __future__ import annotations

import math

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.spec import ParamSpec, declare

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)


def _weights_from(task_vectors: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    return base.unsqueeze(0) + task_vectors


@declare("model_soup", family="parameter", elementwise=True, reference="mergekit 0.1.5 linear (normalize=True, uniform weights)")
def model_soup(task_vectors: torch.Tensor, base: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform Model Soup: θ = Σ_t θ_t / T (Wortsman et al., "Model soups", ICML 2022), i.e. τ = mean of the τ_t (the
    same to float round-off, in one pass over the task vectors)."""
    return task_vectors.mean(dim=0)


@declare(
    "model_stock",
    family="parameter",
    params={"filter_wise": ParamSpec(False, "bool", doc="one interpolation ratio per row (last dimension) instead of per tensor")},
    reference="mergekit 0.1.5 model_stock",
)
def model_stock(
    task_vectors: torch.Tensor, base: torch.Tensor, *, generator: torch.Generator | None = None, filter_wise: bool = False
) -> torch.Tensor:
    """Model Stock (Jang et al., ECCV 2024): θ = t·mean(θ_t) + (1 − t)·θ₀ with t = N·cosθ / (1 + (N − 1)·cosθ).

    cosθ is the mean pairwise cosine of the offsets θ_t − θ₀ (norm products clamped at 1e-6, cosines to [−1, 1]),
    over the flattened tensor or, with filter_wise, per vector along the last dimension. Where |1 + (N − 1)·cosθ| <
    1e-6 the base is kept (t = 0), as mergekit. N = 1 has no pair: cosθ := 1, so t = 1 and θ = θ_1 (mergekit
    requires N ≥ 2).
    """
    n = task_vectors.shape[0]
    if filter_wise:
        w0 = base.unsqueeze(0) if base.ndim == 1 else base
    else:
        w0 = base.reshape(-1)
    # Offsets θ_t − θ₀ = τ_t, one task at a time: a few tensors of one task's size, not of the (T, …) stack's.
    offsets = [tv.reshape(w0.shape) for tv in task_vectors]
    norms = [torch.linalg.vector_norm(o, dim=-1) for o in offsets]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if filter_wise:
        dots = {(i, j): (offsets[i] * offsets[j]).sum(dim=-1) for i, j in pairs}
    else:  # every pairwise dot product from one matrix product: one read of the T offsets instead of T − 1
        gram = task_vectors.reshape(n, -1) @ task_vectors.reshape(n, -1).mT
        dots = {(i, j): gram[i, j] for i, j in pairs}
    cosines = [(dots[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1) for i, j in pairs]
    if cosines:
        cos_theta = (sum(cosines[1:], cosines[0]) / len(cosines)).unsqueeze(-1)
    else:
        cos_theta = torch.ones_like(norms[0]).unsqueeze(-1)
    denominator = 1 + (n - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    ratio = torch.where(singular, torch.zeros_like(cos_theta), n * cos_theta / torch.where(singular, 1.0, denominator))
    total = w0 + offsets[0]
    for o in offsets[1:]:
        total += w0 + o
    merged = ratio * (total / n) + (1 - ratio) * w0
    return merged.reshape(base.shape) - base


def _karcher_mean(points: torch.Tensor, alphas: list[float], max_iter: int, tol: float) -> torch.Tensor:
    """Weighted Karcher mean of the rows of `points` (T, n) on the unit sphere, rescaled by Σ α_t‖x_t‖ (mergekit
    `karcher_merge_tensors`, the same iteration and stopping rules). The rows are turned into unit vectors in place.

    Small angles are computed stably: with d_t = u_t − m (exact in floating point when u_t ≈ m), θ_t = 2·asin(‖d_t‖/2)
    and u_t − ⟨u_t, m⟩m = d_t + (‖d_t‖²/2)·m. mergekit's arccos(⟨u_t, m⟩) in float32 cannot resolve angles below
    ~3e-4 rad, which fine-tunes of a layer-norm weight (all near 1) are: at Whisper-small scale its result was 5.6e-4
    (and this function's earlier arccos form 1.2e-3) away from the float64 Karcher mean, now float32 round-off."""
    norms = torch.linalg.vector_norm(points, dim=1)
    units = points.div_(torch.where(norms == 0, torch.ones_like(norms), norms).unsqueeze(1))
    valid = norms > tol
    if not bool(valid.any()):
        return torch.zeros_like(points[0])
    alpha = torch.tensor(alphas, dtype=points.dtype, device=points.device)
    weights = torch.where(valid, alpha, torch.zeros_like(alpha))
    weights = weights / weights.sum()
    mean = weights @ units
    mean_norm = torch.linalg.vector_norm(mean)
    mean = units[int(torch.nonzero(valid)[0, 0])].clone() if float(mean_norm) < tol else mean / mean_norm
    difference = torch.empty_like(mean)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        along_mean = 0.0
        for unit, weight, is_valid in zip(units, weights.tolist(), valid.tolist()):  # task by task: one n-sized temporary
            if not is_valid:
                continue
            distance = float(torch.linalg.vector_norm(torch.sub(unit, mean, out=difference)))
            theta = 2 * math.asin(min(distance / 2, 1.0))
            if theta < tol:
                continue
            coef = weight * theta / math.sin(theta)
            tangent.add_(difference, alpha=coef)
            along_mean += coef * distance * distance / 2
        tangent.add_(mean, alpha=along_mean)  # Σ_t w_t θ_t/sin θ_t (u_t − ⟨u_t, m⟩ m)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if float(tangent_norm) < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    return (alpha * norms).sum() * mean


@declare(
    "karcher",
    family="parameter",
    params={
        "max_iter": ParamSpec(10, "int", minimum=1, doc="Riemannian gradient iterations"),
        "tol": ParamSpec(1e-5, "float", minimum=0.0, min_inclusive=False, doc="convergence / degeneracy tolerance"),
    },
    reference="mergekit 0.1.5 karcher",
)
def karcher(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    max_iter: int = 10,
    tol: float = 1e-5,
) -> torch.Tensor:
    """Karcher (Riemannian) mean on the unit sphere of the fine-tuned weights θ_t, no base model.

    Norms n_t, directions u_t = θ_t/n_t; start from the normalised weighted mean direction; iterate the tangent-space
    update (log map θ/sin θ, exp map) up to `max_iter` times or until the tangent norm < tol; output
    (Σ α_t n_t)·u with α_t = 1/T. Tensors with norm ≤ tol are left out of the direction. T = 1 returns θ_1.
    """
    n = task_vectors.shape[0]
    if n == 1:
        return task_vectors[0].clone()
    points = _weights_from(task_vectors, base).reshape(n, -1)
    merged = _karcher_mean(points, [1.0 / n] * n, max_iter, tol)
    return merged.reshape(base.shape) - base


@declare(
    "multislerp",
    family="parameter",
    params={
        "eps": ParamSpec(1e-8, "float", minimum=0.0, min_inclusive=False, doc="numerical-stability constant"),
        "use_base": ParamSpec(True, "bool", doc="interpolate the offsets θ_t − θ₀ (mergekit with a base model)"),
    },
    reference="mergekit 0.1.5 multislerp (uniform weights)",
)
def multislerp(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    eps: float = 1e-8,
    use_base: bool = True,
) -> torch.Tensor:
    """Multi-SLERP: barycentric interpolation on the hypersphere (Goddard, mergekit).

    Points x_t = θ_t − θ₀ (use_base) or θ_t; unit-normalise (÷ ‖x_t‖ + eps), weighted mean direction m, tangent
    vectors u_t − ⟨u_t, m⟩m, weighted tangent mean v, exponential map m cos‖v‖ + v sin‖v‖/‖v‖ (‖v‖ + eps), rescale
    by Σ w_t‖x_t‖, add the base back. T = 1 returns θ_1. When the mean direction vanishes (‖m‖ < eps: antipodal
    points, or all-zero offsets such as a frozen tensor) the weighted linear average is returned; mergekit does this
    for T = 2 and raises for T > 2.
    """
    n = task_vectors.shape[0]
    points = task_vectors if use_base else _weights_from(task_vectors, base)
    if n == 1:
        return points[0] if use_base else points[0] - base
    flat = points.reshape(n, -1)
    weights = torch.full((n,), 1.0 / n, dtype=flat.dtype, device=flat.device)
    norms = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.unsqueeze(1)).sum(dim=0)
    mean_norm = torch.linalg.vector_norm(mean)
    if float(mean_norm) < eps:
        result = (flat * weights.unsqueeze(1)).sum(dim=0)
    else:
        mean = mean / mean_norm
        dots = (units * mean).sum(dim=-1, keepdim=True)
        tangent = ((units - dots * mean) * weights.unsqueeze(1)).sum(dim=0)
        tangent_norm = torch.linalg.vector_norm(tangent) + eps
        result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
        result = result * (norms.squeeze(-1) * weights).sum()
    result = result.reshape(base.shape)
    return result if use_base else result - base
