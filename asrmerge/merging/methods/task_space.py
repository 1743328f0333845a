"""Task-vector-space merges: Task Arithmetic, TIES, PCB, SCE.

Each function takes the (T, *shape) stack of task vectors τ_t = θ_t − θ₀ of one named tensor and returns the merged
task vector τ; the merged model is θ₀ + λ·τ.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.linalg import streaming_order_statistics
from asrmerge.merging.methods.sparsify import disjoint_merge, elect_sign, magnitude_topk_mask, order_statistics
from asrmerge.merging.spec import ParamSpec, TensorStream, declare

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)

DENSITY = ParamSpec(0.2, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                    doc="fraction of entries kept per task (by |τ|)")
SCOPES = ("tensor", "global")
AGGREGATIONS = ("mean", "sum")
#: Positions per slice where a method works through a tensor piece by piece (the (T, n) temporaries fit in cache).
SLICE_ENTRIES = 1 << 16


# --------------------------------------------------------------------------------------------------- Task Arithmetic


@declare(
    "task_arithmetic",
    family="task_vector",
    elementwise=True,
    reference="mergekit 0.1.5 task_arithmetic (normalize=False, weight 1; λ scales the sum)",
)
def task_arithmetic(task_vectors: torch.Tensor, base: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Task Arithmetic: τ = Σ_t τ_t (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023)."""
    return task_vectors.sum(dim=0)


# -------------------------------------------------------------------------------------------------------------- TIES


def _global_keep_count(numel: int, density: float) -> int:
    return int(numel * density)


def ties_global_thresholds(abs_values: torch.Tensor, density: float) -> torch.Tensor:
    """Per-task trim threshold over all entries of `abs_values` (T, N): the k-th smallest |τ_t| with
    k = N − int(N·density), as FusionBench `topk_values_mask`; 0 (keep all) when int(N·density) = N."""
    n = abs_values.shape[1]
    keep = _global_keep_count(n, density)
    if keep >= n:
        return torch.zeros(abs_values.shape[0], dtype=abs_values.dtype, device=abs_values.device)
    return abs_values.kthvalue(n - keep, dim=1).values


def _ties_global_stats(stream: TensorStream, params: Mapping[str, Any]) -> dict[str, Any]:
    """Model-wide TIES statistics for scope="global" (exact, not approximate).

    Pass 1–2: per-task threshold = exact k-th smallest |τ_t| over the whole model, k = N − int(N·density)
    (`streaming_order_statistics`: radix select on the float32 bit pattern, two streaming reads).
    Pass 3: the model-wide majority of elected signs, used by FusionBench for entries whose trimmed sum is exactly 0.
    """
    if params["scope"] != "global":
        return {}
    n, t = stream.numel, stream.num_tasks
    keep = _global_keep_count(n, params["density"])
    if keep >= n:
        thresholds = torch.zeros(t)
    else:
        positions = torch.full((t, 1), n - keep - 1, dtype=torch.int64)
        thresholds = streaming_order_statistics(stream.values(torch.abs), positions)[:, 0]
    sign_total = 0.0
    for _, stack in stream():
        thr = thresholds.to(stack.device, stack.dtype).reshape(-1, *([1] * (stack.ndim - 1)))
        trimmed = stack * (stack.abs() >= thr)
        sign_total += float(torch.sign(trimmed.sum(dim=0)).sum())
    return {"thresholds": thresholds, "zero_sign": float(torch.sign(torch.tensor(sign_total)))}


@declare(
    "ties",
    family="task_vector",
    params={
        "density": DENSITY,
        "scope": ParamSpec("tensor", "str", choices=SCOPES,
                           doc="tensor: trim per tensor (mergekit ties); global: trim over the whole model (paper, FusionBench)"),
        "aggregation": ParamSpec("mean", "str", choices=AGGREGATIONS,
                                 doc="disjoint mean (paper, mergekit normalize=True) or disjoint sum (FusionBench default)"),
    },
    reference="scope=tensor: mergekit 0.1.5 ties (normalize=True); scope=global: FusionBench 0.2.33 ties_merging",
    global_stats=_ties_global_stats,
    elementwise=lambda params: params["scope"] == "global",
)
def ties(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.2,
    scope: str = "tensor",
    aggregation: str = "mean",
    thresholds: torch.Tensor | None = None,
    zero_sign: float | None = None,
) -> torch.Tensor:
    """TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023).

    scope="tensor" (mergekit): each τ_t keeps its max(1, int(density·n)) largest-|τ| entries of this tensor; the elected
    sign is +1 where Σ_t τ̂_t ≥ 0, else −1.
    scope="global" (FusionBench): each τ_t keeps entries with |τ| ≥ thresholds[t], the model-wide k-th smallest |τ_t|
    (k = N − int(N·density)), supplied by the engine's pre-pass; the elected sign is sign(Σ_t τ̂_t), entries with an
    exactly zero sum take `zero_sign` (the model-wide majority sign). Without `thresholds`, this tensor is treated as
    the whole model (so the function alone reproduces FusionBench on a flat vector).
    Aggregation over the entries agreeing with the elected sign: "mean" (÷ their count, ≥ 1) or "sum".
    """
    if scope == "tensor":
        if density >= 1:
            trimmed = task_vectors
        else:
            trimmed = torch.empty_like(task_vectors)
            for tv, out in zip(task_vectors, trimmed):
                torch.mul(tv, magnitude_topk_mask(tv, density), out=out)
        return disjoint_merge(trimmed, elect_sign(trimmed), aggregation)
    if scope != "global":
        raise ValueError(f"ties: unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    flat = task_vectors.reshape(task_vectors.shape[0], -1)
    if thresholds is None:
        thresholds = ties_global_thresholds(flat.abs(), density)
    thr = thresholds.to(flat.device, flat.dtype).unsqueeze(1)
    trimmed = flat * (flat.abs() >= thr)
    sign = torch.sign(trimmed.sum(dim=0))
    if zero_sign is None:
        zero_sign = float(torch.sign(sign.sum()))
    sign = torch.where(sign == 0, torch.full_like(sign, zero_sign), sign)
    keep = torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    selected = trimmed * keep
    merged = selected.sum(dim=0)
    if aggregation == "mean":
        merged = merged / (selected != 0).sum(dim=0).clamp_min(1).to(merged.dtype)
    elif aggregation != "sum":
        raise ValueError(f"ties: unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
    return merged.reshape(base.shape)


# --------------------------------------------------------------------------------------------------------------- PCB

PCB_CLAMP_RATIO = 1e-4  # |τ| clamped at its 0.01 % / 99.99 % order statistics (official PCB_merge)


def _pcb_abs_positions(n: int) -> tuple[int, int]:
    # The official `clamp` indexes sorted[int(d·min_ratio)] and sorted[int(d·(1 − max_ratio) − 1)].
    return int(n * PCB_CLAMP_RATIO), int(n * (1 - PCB_CLAMP_RATIO) - 1)


def _pcb_score_positions(n: int, pcb_ratio: float) -> tuple[int, int]:
    return int(n * (1 - pcb_ratio)), int(n * (1 - 0) - 1)


def _minmax(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(x − lo)/(hi − lo) per row; 0 where hi = lo (the reference divides by zero there)."""
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def _pcb_parts(flat: torch.Tensor, abs_bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamped signed task vectors and the balance scores b = intra ⊙ inter, for flat (T, n) task vectors."""
    n_tasks = flat.shape[0]
    lo, hi = abs_bounds[:, :1].to(flat), abs_bounds[:, 1:].to(flat)
    clamped_abs = torch.minimum(torch.maximum(flat.abs(), lo), hi)
    intra = torch.exp(n_tasks * _minmax(clamped_abs, lo, hi) ** 2)
    inter = torch.tanh(flat * flat.sum(dim=0, keepdim=True))
    return torch.sign(flat) * clamped_abs, intra * inter


def _sorted_bounds(values: torch.Tensor, positions: tuple[int, int]) -> torch.Tensor:
    """Per row, the values at `positions` of the ascending order (selection, not a sort)."""
    return torch.stack([order_statistics(row, list(positions)) for row in values])


def _pcb_global_stats(stream: TensorStream, params: Mapping[str, Any]) -> dict[str, Any]:
    """Model-wide PCB bounds for scope="global" (exact order statistics, four streaming reads):
    |τ_t| at ranks int(N·1e-4), int(N·(1−1e-4)−1); then the balance scores at ranks int(N·(1−pcb_ratio)), N−1."""
    if params["scope"] != "global":
        return {}
    n, t = stream.numel, stream.num_tasks
    abs_pos = torch.tensor([_pcb_abs_positions(n)] * t, dtype=torch.int64)
    abs_bounds = streaming_order_statistics(stream.values(torch.abs), abs_pos)

    def scores(stack: torch.Tensor) -> torch.Tensor:
        return _pcb_parts(stack.reshape(t, -1), abs_bounds.to(stack.device))[1]

    score_pos = torch.tensor([_pcb_score_positions(n, params["pcb_ratio"])] * t, dtype=torch.int64)
    score_bounds = streaming_order_statistics(stream.values(scores), score_pos)
    return {"abs_bounds": abs_bounds, "score_bounds": score_bounds}


@declare(
    "pcb",
    family="task_vector",
    params={
        "pcb_ratio": ParamSpec(0.1, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                               doc="fraction of entries kept per task by balance score (official default 0.1; its script uses 0.05 with λ 1.2)"),
        "scope": ParamSpec("tensor", "str", choices=SCOPES,
                           doc="tensor: quantiles/normalisation per tensor; global: over the whole flattened model (official script)"),
    },
    reference="official PCB_merge (duguodong7/pcb-merging, pcb-merging.py)",
    global_stats=_pcb_global_stats,
    elementwise=lambda params: params["scope"] == "global",
)
def pcb(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    pcb_ratio: float = 0.1,
    scope: str = "tensor",
    abs_bounds: torch.Tensor | None = None,
    score_bounds: torch.Tensor | None = None,
) -> torch.Tensor:
    """PCB-Merging: parameter competition balancing (Du et al., NeurIPS 2024).

    |τ_t| clamped to its [0.01 %, 99.99 %] order statistics; intra-balance exp(T·minmax(|τ_t|)²); inter-balance
    tanh(τ_t ⊙ Σ_s τ_s); score b_t = intra ⊙ inter; scores below their (1 − pcb_ratio) order statistic are raised to
    it, then min-max normalised per task into scale_t; τ = Σ_t clamp(τ_t)·scale_t / max(Σ_t scale_t, 1e-12).
    scope="global" uses model-wide bounds `abs_bounds` (T, 2) and `score_bounds` (T, 2) from the engine pre-pass;
    without them (or with scope="tensor") the bounds come from this tensor. A min-max over a constant row gives 0
    (the reference divides by zero there).
    """
    if scope not in SCOPES:
        raise ValueError(f"pcb: unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    flat = task_vectors.reshape(task_vectors.shape[0], -1)
    n = flat.shape[1]
    if abs_bounds is None or scope == "tensor":
        abs_bounds = _sorted_bounds(flat.abs(), _pcb_abs_positions(n))
    clamped, score = _pcb_parts(flat, abs_bounds)
    if score_bounds is None or scope == "tensor":
        score_bounds = _sorted_bounds(score, _pcb_score_positions(n, pcb_ratio))
    lo, hi = score_bounds[:, :1].to(flat), score_bounds[:, 1:].to(flat)
    scale = _minmax(torch.minimum(torch.maximum(score, lo), hi), lo, hi)
    merged = (clamped * scale).sum(dim=0) / scale.sum(dim=0).clamp_min(1e-12)
    return merged.reshape(base.shape)


# --------------------------------------------------------------------------------------------------------------- SCE


def _sce_select_mask(task_vectors: torch.Tensor, select_topk: float) -> torch.Tensor:
    """Top select_topk fraction of positions by variance across tasks, counted among nonzero variances."""
    variance = torch.var(task_vectors, dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(variance)) * select_topk)
    mask = torch.zeros_like(variance)
    if k > 0:
        mask.view(-1)[torch.topk(variance.abs().reshape(-1), k, largest=True).indices] = 1
    return mask


@declare(
    "sce",
    family="task_vector",
    params={
        "select_topk": ParamSpec(1.0, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                                 doc="fraction of positions kept by cross-task variance (1 = all)"),
        "weight_eps": ParamSpec(1e-6, "float", minimum=0.0,
                                doc="if Σ_t mean(τ_t²) < weight_eps the task weights fall back to uniform (mergekit: 1e-6)"),
    },
    reference="mergekit 0.1.5 sce",
)
def sce(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    select_topk: float = 1.0,
    weight_eps: float = 1e-6,
) -> torch.Tensor:
    """SCE: Select, Calculate, Erase (FuseChat-2.0, Wan et al. 2024).

    Select the top `select_topk` positions by variance across tasks; weight w_t = mean(τ_t²) / Σ_s mean(τ_s²)
    (uniform when that sum is below `weight_eps`, as mergekit: note small task vectors, e.g. |τ| ~ 1e-4, hit this);
    erase entries whose sign disagrees with the TIES "sum" election; τ = Σ w_t m_t τ_t / max(Σ w_t m_t, 1e-6).
    Once the weights are known everything is elementwise: both passes go through the tensor in slices of
    SLICE_ENTRIES positions, so the temporaries stay small whatever the tensor's size.
    """
    flat = task_vectors.reshape(task_vectors.shape[0], -1)
    select = _sce_select_mask(task_vectors, select_topk).reshape(-1) if select_topk < 1 else None

    def slices() -> Iterator[tuple[slice, torch.Tensor]]:
        for start in range(0, flat.shape[1], SLICE_ENTRIES):
            part = slice(start, start + SLICE_ENTRIES)
            yield part, flat[:, part] if select is None else flat[:, part] * select[part]

    energy = sum((torch.linalg.vector_norm(values, dim=1).square() for _, values in slices()),
                 torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)) / max(flat.shape[1], 1)
    total = float(energy.sum())
    weights = torch.full_like(energy, 1 / energy.numel()) if abs(total) < weight_eps else energy / total
    merged = torch.empty(flat.shape[1], dtype=flat.dtype, device=flat.device)
    for part, values in slices():
        kept = weights.unsqueeze(1) * (torch.sign(values) == elect_sign(values))
        merged[part] = (values * kept).sum(dim=0) / kept.sum(dim=0).clamp_min(1e-6)
    return merged.reshape(task_vectors.shape[1:])
