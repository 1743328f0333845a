"""Sparsification and sign-consensus primitives shared by TIES, DARE, Breadcrumbs, DELLA and SCE.

All functions act on one task's tensor (or on the (T, *shape) stack for the consensus helpers) and follow mergekit
0.1.5 `mergekit/sparsify.py` and `generalized_task_arithmetic.get_mask` unless stated otherwise.
"""

from __future__ import annotations

import torch

L1_RESCALE_EPS = 1e-7


def l1_rescale(original: torch.Tensor, masked: torch.Tensor, eps: float = L1_RESCALE_EPS) -> torch.Tensor:
    """Rescale `masked` so that its L1 norm equals `original`'s (mergekit `rescaled_masked_tensor`, norm l1).

    Left unscaled when either norm is below `eps` (no division by ~0).
    """
    before = original.abs().sum()
    after = masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def magnitude_topk(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = max(1, int(density·n)) largest-|x| entries, zero the rest (mergekit `magnitude`).

    density ≥ 1 returns the tensor unchanged.
    """
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    flat = tensor.reshape(-1)
    keep = torch.topk(flat.abs(), k, largest=True, sorted=False).indices
    mask = torch.zeros_like(flat)
    mask[keep] = 1
    return (flat * mask).reshape(tensor.shape)


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Drop the top `gamma` fraction by |x| and the smallest values down to `density` (mergekit `magnitude_outliers`).

    With n entries: keep the int(density·n) entries just below the int(gamma·n) largest; the outlier cut shrinks when
    needed to keep the target density. density ≥ 1 returns the tensor unchanged (as mergekit).
    """
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    flat = tensor.reshape(-1)
    order = torch.sort(flat.abs(), descending=False, stable=True).indices
    mask = torch.zeros_like(flat)
    mask[order[n_bottom : n_bottom + target]] = 1
    return (flat * mask).reshape(tensor.shape)


def magprune_keep_probabilities(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MAGPRUNE keep probabilities (mergekit `della_magprune`).

    Ranks |x| along dim 1 (1-D tensors are treated as one row), normalises the ranks to [0, 1] and maps them linearly
    to keep probabilities in [density − ε, density + ε] (larger magnitude → more likely kept). A row of length 1 has no
    rank spread; it gets rank 0.5, i.e. probability `density` (mergekit would produce NaN there).
    """
    work = tensor.unsqueeze(0) if tensor.ndim < 2 else tensor
    ranks = torch.argsort(torch.argsort(work.abs(), dim=1, stable=True), dim=1).to(torch.float32) + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    spread = hi - lo
    rank_norm = torch.where(spread > 0, (ranks - lo) / spread.clamp_min(1), torch.full_like(ranks, 0.5)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    return probs.reshape(tensor.shape)


def elect_sign(stack: torch.Tensor) -> torch.Tensor:
    """TIES sign election by total mass: +1 where Σ_t x_t ≥ 0, else −1 (mergekit `get_mask(method="sum")`)."""
    return torch.where(stack.sum(dim=0) >= 0, 1.0, -1.0).to(stack.dtype)


def agreement_mask(stack: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """1 where an entry is nonzero and has the elected sign, else 0 (zeros never count)."""
    return (torch.sign(stack) == sign.unsqueeze(0)).to(stack.dtype)


def disjoint_merge(stack: torch.Tensor, sign: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Aggregate the entries agreeing with `sign`: "mean" divides by their count (≥ 1), "sum" adds them."""
    mask = agreement_mask(stack, sign)
    total = (stack * mask).sum(dim=0)
    if aggregation == "sum":
        return total
    if aggregation == "mean":
        return total / mask.sum(dim=0).clamp_min(1)
    raise ValueError(f"unknown aggregation {aggregation!r}; known: mean, sum")
