"""The merge plan: which tensors the engine merges, in which order, whole or in slices, side by side or not.

`plan_merge` decides it from the method's declaration (asrmerge.merging.spec), the base's shapes and the outputs
asked for, before any tensor is read; the reader (asrmerge.merging.reader) reads the plan's pieces, the executor
(asrmerge.merging.engine) merges them, the sinks (asrmerge.merging.sinks) write them. Nothing here touches a tensor.

- Elementwise methods (Model Soup, Task Arithmetic, TIES and PCB with scope="global", Consensus TA) go through each
  tensor in slices of SLICE_ELEMENTS entries per task, so their peak memory is a few MiB whatever the model and the
  slices' arithmetic stays in the CPU caches; so do the tensors that subspace methods only average (non-matrices,
  and the lookup tables of `exclude_from_svd`).
- Matrices are whole when diagnostics are wanted: their spectra need the whole matrix.
- SVD methods on a CPU merge whole tensors up to PREFETCH_BYTES side by side, one per worker thread
  (asrmerge.merging.runtime.side_by_side_pool).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asrmerge.merging.spec import MergeMethod

#: Entries per task in one slice of an elementwise merge: the (T, n) float32 stack (T MiB) and the method's
#: temporaries stay in the CPU caches, so the only pass over main memory is reading the inputs.
SLICE_ELEMENTS = 1 << 18
#: Entries per task in one slice of a model-wide pre-pass stream (bounds its memory on large tensors).
STATS_SLICE_ELEMENTS = 1 << 22
#: Whole tensors whose θ₀ + stack take at most this many bytes are read ahead while the previous one is merged.
PREFETCH_BYTES = 1 << 28


def small_enough(numel: int, num_tasks: int) -> bool:
    """Whether θ₀ and the (T, numel) float32 stack of a tensor fit PREFETCH_BYTES (read ahead, copied to a worker)."""
    return (num_tasks + 1) * numel * 4 <= PREFETCH_BYTES


@dataclass(frozen=True)
class TensorStep:
    """One tensor of the plan: read whole (`limit` None) or in slices of `limit` entries; merged on a worker of the
    side-by-side pool (`side_by_side`) or on the engine's thread; `mean_only`: a subspace method gives it the mean
    of τ_t (a non-matrix, or a lookup table of `exclude_from_svd`)."""

    name: str
    shape: tuple[int, ...]
    limit: int | None
    side_by_side: bool
    mean_only: bool

    @property
    def whole(self) -> bool:
        return self.limit is None


@dataclass(frozen=True)
class MergePlan:
    """Every tensor step of one merge, in the base's order, and the worker threads the side-by-side steps share."""

    steps: tuple[TensorStep, ...]
    workers: int
    elementwise: bool
    num_tasks: int

    def reads(self) -> list[tuple[str, tuple[int, ...], int | None]]:
        """The reader's plan: (name, shape, slice limit) of every step (asrmerge.merging.reader.TensorReader.stream)."""
        return [(step.name, step.shape, step.limit) for step in self.steps]

    def prepass_reads(self) -> list[tuple[str, tuple[int, ...], int | None]]:
        """The reads of a model-wide pre-pass (`MergeMethod.global_stats`): every tensor in slices."""
        return [(step.name, step.shape, STATS_SLICE_ELEMENTS) for step in self.steps]

    @property
    def numel(self) -> int:
        return sum(math.prod(step.shape) for step in self.steps)


def plan_merge(
    method: MergeMethod, params: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], names: Sequence[str],
    num_tasks: int, exclude_from_svd: Sequence[str], diagnose: bool, workers: int,
) -> MergePlan:
    """The plan of merging the tensors `names` (shaped `shapes`) of T = `num_tasks` tasks with `method` (resolved
    `params`); `workers`: threads for side-by-side SVD merges (1: none)."""
    patterns = [re.compile(p) for p in exclude_from_svd]
    elementwise = method.is_elementwise(params)
    steps = []
    for name in names:
        shape = tuple(shapes[name])
        matrix = len(shape) == 2
        mean_only = method.matrix_only and (not matrix or any(p.search(name) for p in patterns))
        whole = (diagnose and matrix) or not (elementwise or mean_only)
        side_by_side = whole and workers > 1 and small_enough(math.prod(shape), num_tasks)
        steps.append(TensorStep(name, shape, None if whole else SLICE_ELEMENTS, side_by_side, mean_only))
    return MergePlan(tuple(steps), workers, elementwise, num_tasks)
