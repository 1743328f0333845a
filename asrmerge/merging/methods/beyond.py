"""Merges beyond the seed paper: DARE, Model Breadcrumbs, DELLA, Consensus TA (TALL masks).

DARE and DELLA are random: they draw only from the `generator` argument (the engine seeds one per tensor from
(seed, tensor name)).
"""

from __future__ import annotations

from typing import Any, Mapping

from asrmerge.lazy_import import lazy_import
from asrmerge.merging.methods.sparsify import (
    disjoint_merge,
    elect_sign,
    l1_rescale,
    magnitude_outliers,
    magprune_keep_probabilities,
)
from asrmerge.merging.spec import ParamSpec, declare

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)

AGGREGATION = ParamSpec("sum", "str", choices=("mean", "sum"),
                        doc="TIES step: disjoint sum (mergekit dare_ties, normalize=False) or disjoint mean")


def _require_generator(name: str, generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        raise ValueError(f"{name} is random: pass a seeded torch.Generator as `generator`")
    return generator


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32).to(like.device)


def _combine(stack: torch.Tensor, then: str, aggregation: str) -> torch.Tensor:
    if then == "task_arithmetic":
        return stack.sum(dim=0)
    if then == "ties":
        return disjoint_merge(stack, elect_sign(stack), aggregation)
    raise ValueError(f"unknown combination {then!r}; known: task_arithmetic, ties")


# -------------------------------------------------------------------------------------------------------------- DARE


@declare(
    "dare",
    family="task_vector",
    uses_rng=True,
    params={
        "p": ParamSpec(0.9, "float", minimum=0.0, maximum=1.0, max_inclusive=False, doc="drop probability per entry"),
        "then": ParamSpec("task_arithmetic", "str", choices=("task_arithmetic", "ties"),
                          doc="combine the sparsified task vectors by sum (dare_linear) or TIES sign consensus (dare_ties)"),
        "rescale": ParamSpec("inverse_keep", "str", choices=("inverse_keep", "l1_match"),
                             doc="survivors ÷ (1 − p) (paper, FusionBench) or L1-norm matching (mergekit dare_*)"),
        "aggregation": AGGREGATION,
    },
    reference="paper / FusionBench 0.2.33 dare (rescale=inverse_keep); mergekit 0.1.5 dare_linear/dare_ties (l1_match)",
)
def dare(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    p: float = 0.9,
    then: str = "task_arithmetic",
    rescale: str = "inverse_keep",
    aggregation: str = "sum",
) -> torch.Tensor:
    """DARE: Drop And REscale (Yu et al., "Language Models are Super Mario", ICML 2024).

    Each entry of each τ_t is kept with probability 1 − p (u < 1 − p, u ~ U[0, 1) from `generator`, drawn as one
    (T, *shape) block), survivors are rescaled (÷ (1 − p), or by L1-norm matching per task), then combined by
    Task Arithmetic (sum) or by TIES sign election + disjoint `aggregation` (no extra magnitude trim, as mergekit).
    """
    gen = _require_generator("dare", generator)
    if rescale not in ("inverse_keep", "l1_match"):
        raise ValueError(f"dare: unknown rescale {rescale!r}; known: inverse_keep, l1_match")
    rows, total = [], None
    for tv in task_vectors:  # one (*shape) draw per task, in order: the same numbers as one (T, *shape) block
        dropped = tv * (_uniform(tv.shape, tv, gen) < 1 - p).to(tv.dtype)
        dropped = dropped / (1 - p) if rescale == "inverse_keep" else l1_rescale(tv, dropped)
        if then == "task_arithmetic":  # running sum: one task's temporaries at a time
            total = dropped if total is None else total.add_(dropped)
        else:
            rows.append(dropped)
    return total if total is not None else _combine(torch.stack(rows), then, aggregation)


# ------------------------------------------------------------------------------------------------------- Breadcrumbs


@declare(
    "breadcrumbs",
    family="task_vector",
    params={
        "density": ParamSpec(0.9, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                             doc="fraction of entries kept per task (density ≥ 1 keeps everything, outliers too)"),
        "gamma": ParamSpec(0.01, "float", minimum=0.0, maximum=1.0, max_inclusive=False,
                           doc="fraction of largest-|τ| outliers removed"),
    },
    reference="mergekit 0.1.5 breadcrumbs (magnitude_outliers, no consensus, normalize=False)",
)
def breadcrumbs(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.9,
    gamma: float = 0.01,
) -> torch.Tensor:
    """Model Breadcrumbs (Davari & Belilovsky, ECCV 2024): per tensor and task, drop the top-gamma |τ| outliers and
    the smallest entries down to `density`; τ = Σ_t of the masked task vectors."""
    return torch.stack([magnitude_outliers(tv, density, gamma) for tv in task_vectors]).sum(dim=0)


# ------------------------------------------------------------------------------------------------------------- DELLA


def _check_della(params: Mapping[str, Any]) -> None:
    density, epsilon = params["density"], params["epsilon"]
    if density < 1 and not (0 < density - epsilon and density + epsilon < 1):
        raise ValueError(f"density ± epsilon must lie in (0, 1); got density={density}, epsilon={epsilon}")


@declare(
    "della",
    family="task_vector",
    uses_rng=True,
    params={
        "density": ParamSpec(0.5, "float", minimum=0.0, maximum=1.0, min_inclusive=False,
                             doc="mean keep probability (density ≥ 1: no drop)"),
        "epsilon": ParamSpec(0.15, "float", minimum=0.0, maximum=1.0, max_inclusive=False,
                             doc="keep probabilities span density ± epsilon by magnitude rank"),
        "rescale": ParamSpec("l1_match", "str", choices=("l1_match", "inverse_keep", "none"),
                             doc="L1-norm matching (mergekit rescale=True), ÷ keep probability (paper), or none"),
        "aggregation": ParamSpec("mean", "str", choices=("mean", "sum"),
                                 doc="disjoint mean (mergekit della, normalize=True) or sum"),
    },
    reference="mergekit 0.1.5 della (della_magprune, rescale=True, sign consensus sum, normalize=True)",
    check=_check_della,
)
def della(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.5,
    epsilon: float = 0.15,
    rescale: str = "l1_match",
    aggregation: str = "mean",
) -> torch.Tensor:
    """DELLA-Merging (Deep et al. 2024): MAGPRUNE drop with magnitude-rank-dependent keep probabilities in
    [density − ε, density + ε] (`magprune_keep_probabilities`, ranks along dim 1 as mergekit), rescale, then TIES
    sign election and disjoint aggregation. Bernoulli draws come from `generator` (u < p, one block per task)."""
    gen = _require_generator("della", generator)
    if density >= 1:
        pruned = task_vectors
    else:
        _check_della({"density": density, "epsilon": epsilon})
        rows = []
        for tv in task_vectors:
            probs = magprune_keep_probabilities(tv, density, epsilon)
            kept = tv * (_uniform(tv.shape, tv, gen) < probs).to(tv.dtype)
            if rescale == "l1_match":
                kept = l1_rescale(tv, kept)
            elif rescale == "inverse_keep":
                kept = kept / probs
            elif rescale != "none":
                raise ValueError(f"della: unknown rescale {rescale!r}; known: l1_match, inverse_keep, none")
            rows.append(kept)
        pruned = torch.stack(rows)
    return disjoint_merge(pruned, elect_sign(pruned), aggregation)


# ------------------------------------------------------------------------------------------------------ Consensus TA


@declare(
    "consensus_ta",
    family="task_vector",
    elementwise=True,
    params={
        "k": ParamSpec(2, "int", minimum=0, doc="keep entries selected by at least k task masks"),
        "lambda_mask": ParamSpec(0.6, "float", minimum=0.0, doc="TALL-mask λ_t (FusionBench default 0.6)"),
        "mtl_scale": ParamSpec(1.0, "float", minimum=0.0, min_inclusive=False,
                               doc="τ_MTL = mtl_scale·Σ τ_t inside the masks (STAR's consensus uses its TA coefficient)"),
    },
    reference="TALL masks / Consensus TA (FusionBench 0.2.33 tall_mask/utils.py, IBM/STAR merger/tall_mask.py)",
)
def consensus_ta(
    task_vectors: torch.Tensor,
    base: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    k: int = 2,
    lambda_mask: float = 0.6,
    mtl_scale: float = 1.0,
) -> torch.Tensor:
    """Consensus Task Arithmetic (Wang et al., "Localizing Task Information for Improved Model Merging", ICML 2024).

    TALL masks m_t = |τ_t| > λ·|τ_MTL − τ_t| (strict, as the references) with τ_MTL = mtl_scale·Σ_t τ_t; keep entries
    selected by ≥ k masks; τ = mask ⊙ Σ_t τ_t.
    """
    total = task_vectors.sum(dim=0)
    mtl = mtl_scale * total
    votes = torch.zeros_like(total)
    for tv in task_vectors:  # task by task: the temporaries have one task's size
        votes += tv.abs() > (mtl - tv).abs_().mul_(lambda_mask)
    return torch.where(votes >= k, total, 0.0)
