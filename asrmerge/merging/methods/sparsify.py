"""Sparsification and sign-consensus primitives shared by TIES, DARE, Breadcrumbs, DELLA and SCE.

All functions act on one task's tensor (or on the (T, *shape) stack for the consensus helpers) and follow mergekit
0.1.5 `mergekit/sparsify.py` and `generalized_task_arithmetic.get_mask` unless stated otherwise.
"""

from __future__ import annotations

import numpy

from asrmerge.lazy_import import lazy_import

torch = lazy_import("torch")  # executed on first use (asrmerge.lazy_import)

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


def order_statistics(values: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """The values at 0-based `positions` of ascending-sorted `values` (1-D), without sorting: introselect
    (numpy.partition) on CPU float32/float64, torch.sort elsewhere. Exact: a value at a rank does not depend on how
    ties are ordered."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(numpy.partition(values.detach().numpy(), positions)[positions])
    return torch.sort(values).values[positions]


def magnitude_topk_mask(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of the k = max(1, int(density·n)) largest-|x| entries (0 < density < 1, n > 0; mergekit
    `magnitude`). When no other entry has the k-th largest |x|, that set is unique and found from a threshold
    (selection, no sort); otherwise torch.topk breaks the tie (mergekit's argsort may keep another of the equal
    entries)."""
    flat = tensor.reshape(-1)
    n = flat.numel()
    k = max(1, int(density * n))
    magnitude = flat.abs()
    threshold = order_statistics(magnitude, [n - k])[0]
    mask = magnitude >= threshold
    if int(torch.count_nonzero(mask)) != k:
        mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
        mask[torch.topk(magnitude, k, largest=True, sorted=False).indices] = True
    return mask.reshape(tensor.shape)


def magnitude_topk(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = max(1, int(density·n)) largest-|x| entries, zero the rest (mergekit `magnitude`).

    density ≥ 1 returns the tensor unchanged.
    """
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    return tensor * magnitude_topk_mask(tensor, density)


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Drop the top `gamma` fraction by |x| and the smallest values down to `density` (mergekit `magnitude_outliers`).

    With n entries: keep the int(density·n) entries just below the int(gamma·n) largest; the outlier cut shrinks when
    needed to keep the target density. density ≥ 1 returns the tensor unchanged (as mergekit). The kept entries are
    ranks [n_bottom, n_bottom + target) of a stable ascending sort of |x|, found by selection (no sort): see
    `stable_rank_range_mask`.
    """
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    flat = tensor.reshape(-1)
    if target == 0:
        return flat.mul(0).reshape(tensor.shape)
    return (flat * stable_rank_range_mask(flat.abs(), n_bottom, n_bottom + target)).reshape(tensor.shape)


def stable_rank_range_mask(values: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Mask of the 1-D `values` whose rank in a stable ascending sort lies in [start, stop) (0 ≤ start < stop ≤ n),
    without sorting. The values at ranks start and stop − 1 come from selection; every value strictly between them is
    inside; of the entries equal to an end value, which sit at consecutive ranks in index order (that is what stable
    means), those whose rank falls inside are kept."""
    low, high = order_statistics(values, [start, stop - 1])
    keep = (values >= low) & (values <= high)
    if int(torch.count_nonzero(keep)) == stop - start:  # no equal values straddle an end: done
        return keep
    keep = (values > low) & (values < high)
    for end_value in {float(low), float(high)}:
        equal = values == end_value
        ranks = int(torch.count_nonzero(values < end_value)) + torch.cumsum(equal, dim=0) - 1
        keep |= equal & (ranks >= start) & (ranks < stop)
    return keep


def magprune_keep_probabilities(tensor: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA MAGPRUNE keep probabilities (mergekit `della_magprune`).

    Ranks |x| along dim 1 (1-D tensors are treated as one row), normalises the ranks to [0, 1] and maps them linearly
    to keep probabilities in [density − ε, density + ε] (larger magnitude → more likely kept). A row of length 1 has no
    rank spread; it gets rank 0.5, i.e. probability `density` (mergekit would produce NaN there).
    """
    work = tensor.unsqueeze(0) if tensor.ndim < 2 else tensor
    # ranks = argsort(argsort(|x|)): the inverse of the stable order, by one scatter instead of a second sort
    order = torch.argsort(work.abs(), dim=1, stable=True)
    positions = torch.arange(work.shape[1], device=work.device).view(1, -1, *([1] * (work.ndim - 2))).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions).to(torch.float32) + 1
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
    """Aggregate the entries agreeing with `sign`: "mean" divides by their count (≥ 1), "sum" adds them.

    Task by task (running sums in task order, as the sum over dim 0), so the temporaries have one task's size."""
    if aggregation not in ("mean", "sum"):
        raise ValueError(f"unknown aggregation {aggregation!r}; known: mean, sum")
    total = torch.zeros_like(sign)
    count = torch.zeros_like(sign) if aggregation == "mean" else None
    for row in stack:
        agree = torch.sign(row) == sign
        total += torch.where(agree, row, 0.0)
        if count is not None:
            count += agree
    return total if count is None else total / count.clamp_min(1)
