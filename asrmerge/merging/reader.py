"""The merge's inputs: θ₀ and the stacked τ_t of each tensor, read from the checkpoints, and the data-aware
statistics matched to the tasks.

`TensorReader.stream` reads the pieces of a plan (asrmerge.merging.plan) in order, reading the next one in a
background thread while the engine merges the current one; `open_inputs` checks every input against the base;
`TaskStatistics` checks the statistics files of a data-aware merge before anything is merged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from asrmerge import layout
from asrmerge.merging.checkpoint import (
    FINETUNED_FINGERPRINT,
    MODEL_FINGERPRINT,
    TASK_FINGERPRINTS,
    Checkpoint,
    all_finite,
    check_compatible,
    open_checkpoint,
)
from asrmerge.merging.plan import small_enough
from asrmerge.merging.runtime import prefetch_thread
from asrmerge.merging.spec import STATISTICS_FILE_KIND, STATISTICS_KINDS, statistics_shape


class TensorReader:
    """Reads θ₀ and the stacked τ_t (T, n) of each tensor, or of slices of its flattened entries, into reused buffers.

    τ_t comes from task-vector files or, from fine-tuned checkpoints, as θ_t − θ₀ computed in place. Buffers are
    reused from tensor to tensor (a returned tensor is valid until the next one is requested), which saves an
    allocation and its page faults per tensor; every value read is checked for NaN/Inf. While the caller merges a
    slice, a background thread reads the next slice's bytes into a second set of buffers (`stream`).
    """

    def __init__(self, base: Checkpoint, inputs: Sequence[Checkpoint], from_finetuned: bool):
        self.base, self.inputs, self.from_finetuned = base, list(inputs), from_finetuned
        self._buffers: dict[str, torch.Tensor] = {}
        self._pending: Future[None] | None = None

    def _buffer(self, key: str, numel: int) -> torch.Tensor:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            self._buffers.pop(key, None)
            buffer = self._buffers[key] = torch.empty(numel, dtype=torch.float32)
        return buffer[:numel]

    def owns(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` shares memory with a buffer that a later read overwrites."""
        pointer = tensor.untyped_storage().data_ptr()
        return any(pointer == buffer.untyped_storage().data_ptr() for buffer in list(self._buffers.values()))

    def _views(self, which: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        theta0 = self._buffer(f"base{which}", count)
        stack = self._buffer(f"stack{which}", len(self.inputs) * count).view(len(self.inputs), count)
        return theta0, stack

    def _read(self, name: str, start: int, count: int, which: int) -> None:
        """Entries [start, start + count) into buffer set `which`: θ₀, and τ_t, computed straight from the memory-mapped
        files (θ_t − θ₀ in one pass, no intermediate copy)."""
        theta0, stack = self._views(which, count)
        theta0.copy_(self.base.view(name, start, count))
        self.base.release(name, start, count)
        for row, ckpt in zip(stack, self.inputs):
            if self.from_finetuned:
                torch.sub(ckpt.view(name, start, count), theta0, out=row)
            else:
                row.copy_(ckpt.view(name, start, count))
            # Copied: its mapped pages leave this process's resident memory before the next input's are read.
            ckpt.release(name, start, count)

    def _finish(self, name: str, start: int, count: int, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The NaN/Inf checks of θ₀ and of the τ_t that `_read` computed, on buffer set `which`."""
        theta0, stack = self._views(which, count)
        self.base.check_finite(name, theta0)
        if not all_finite(stack):
            if self._pending is not None:
                self._pending.result()  # the inputs' scratch buffers are free again
            for ckpt in self.inputs:  # name the file with NaN/Inf
                ckpt.check_finite(name, ckpt.read_into(name, torch.empty(count), start))
            if not bool(torch.isfinite(stack).all()):
                raise ValueError(f"tensor {name!r}: θ_t − θ₀ overflows float32")
        return theta0, stack

    def stream(self, reads: Sequence[tuple[str, tuple[int, ...], int | None]]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, θ₀, τ stack) for each (name, shape, limit) of `reads` (asrmerge.merging.plan.MergePlan.reads), in
        order: the whole tensor, shaped (*shape) and (T, *shape), or with `limit`, consecutive slices of at most
        `limit` flattened entries, shaped (n,) and (T, n).

        Pieces alternate between two buffer sets, and the next piece is read in a background thread while the caller
        works on the current one. Whole tensors larger than plan.PREFETCH_BYTES (θ₀ and the stack) are not read ahead
        (that would double the peak memory): they are read when asked, into set 0."""
        pieces: list[tuple[str, tuple[int, ...], int, int, bool]] = []
        for name, shape, limit in reads:
            numel = math.prod(shape)
            if limit is None or numel <= limit:
                pieces.append((name, shape, 0, numel, False))
            else:
                pieces += [(name, shape, start, min(limit, numel - start), True) for start in range(0, numel, limit)]
        ahead = [sliced or small_enough(count, len(self.inputs)) for _, _, _, count, sliced in pieces]
        sets, previous = [], 1
        for prefetched in ahead:
            previous = 1 - previous if prefetched else 0
            sets.append(previous)
        loader = prefetch_thread()
        try:
            for i, (name, shape, start, count, sliced) in enumerate(pieces):
                if self._pending is not None:
                    self._pending.result()
                    self._pending = None
                else:
                    self._read(name, start, count, sets[i])
                if i + 1 < len(pieces) and ahead[i + 1]:
                    following = pieces[i + 1]
                    self._pending = loader.submit(self._read, following[0], following[2], following[3], sets[i + 1])
                theta0, stack = self._finish(name, start, count, sets[i])
                if not sliced:
                    theta0, stack = theta0.view(shape), stack.view(len(self.inputs), *shape)
                yield name, theta0, stack
        finally:
            if self._pending is not None:
                self._pending.exception()  # wait; an error of an unused read does not matter any more
                self._pending = None
            loader.shutdown()


def check_differs_from_base(base: Checkpoint, finetuned: Checkpoint) -> None:
    """A "fine-tune" with the base's weights (a copy) would merge as a zero task vector: refused, naming it."""
    if finetuned.fingerprint == base.fingerprint:
        raise ValueError(f"fine-tune {finetuned.path} has the weights of the base {base.path} (a copy?): nothing to "
                         "merge from it")


def input_origin(ckpt: Checkpoint, from_finetuned: bool) -> str | None:
    """The fingerprint of the fine-tune a merge input comes from: its own for a model, its record for a task vector."""
    return ckpt.fingerprint if from_finetuned else ckpt.metadata.get(FINETUNED_FINGERPRINT)


def open_inputs(base_ckpt: Checkpoint, paths: Sequence[str | os.PathLike[str]], from_finetuned: bool) -> list[Checkpoint]:
    checkpoints = [open_checkpoint(p) for p in paths]
    for ckpt in checkpoints:
        if from_finetuned:
            check_compatible(base_ckpt, ckpt)
            check_differs_from_base(base_ckpt, ckpt)
        else:
            check_compatible(base_ckpt, ckpt, names=base_ckpt.float_names)
            if ckpt.metadata.get("kind") != layout.TASK_VECTOR_KIND:
                raise ValueError(f"{ckpt.path} is not a task-vector file (kind={ckpt.metadata.get('kind')!r}): "
                                 "write one with `asrmerge task-vector`, or pass fine-tuned models as --finetuned")
    return checkpoints


def _match_by_origin(files: Sequence[Checkpoint], origins: Sequence[str | None]) -> list[Checkpoint]:
    """Per-task statistics in the order of the tasks, matched by the fine-tune each was computed from (its recorded
    MODEL_FINGERPRINT against each task's origin), never by position; a file of no task, or a task without its
    file, is an error naming it."""
    by_origin = {}
    for ckpt in files:
        made_from = ckpt.metadata.get(MODEL_FINGERPRINT)
        if made_from is None:
            raise ValueError(f"{ckpt.path} records no model it was computed from ({MODEL_FINGERPRINT}): compute it "
                             "again with `asrmerge statistics`")
        by_origin[made_from] = ckpt
    ordered = []
    for task, origin in enumerate(origins):
        if origin is None:
            raise ValueError(f"task {task} records no fine-tune it was made from ({FINETUNED_FINGERPRINT}): write its "
                             "task vector again with `asrmerge task-vector`")
        if origin not in by_origin:
            raise ValueError(f"no statistics file was computed from the fine-tune of task {task}; the files given "
                             f"come from other models ({', '.join(str(c.path) for c in files)})")
        ordered.append(by_origin.pop(origin))
    return ordered


class TaskStatistics:
    """The statistics files of a data-aware merge (one per task, matched to the tasks by the fine-tune each was
    computed from, or one for all tasks: STATISTICS_KINDS), checked against the base before anything is merged: the
    kind the method needs, the same tensors in every file, shapes that fit."""

    def __init__(self, kind: str, base: Checkpoint, paths: Sequence[str | os.PathLike[str]], origins: Sequence[str | None]):
        self.per_task = STATISTICS_KINDS[kind]
        num_tasks = len(origins)
        if len(paths) != (num_tasks if self.per_task else 1):
            raise ValueError(f"{kind} statistics: {'one file per task' if self.per_task else 'one file'} is needed "
                             f"for {num_tasks} tasks, got {len(paths)}")
        self.files = [open_checkpoint(p) for p in paths]
        try:
            for ckpt in self.files:
                if ckpt.metadata.get("kind") != STATISTICS_FILE_KIND or ckpt.metadata.get("statistics") != kind:
                    raise ValueError(f"{ckpt.path} is not a file of {kind} statistics (kind={ckpt.metadata.get('kind')!r}, "
                                     f"statistics={ckpt.metadata.get('statistics')!r}): write one with `asrmerge statistics`")
                if set(ckpt.names) != set(self.files[0].names):
                    odd = sorted(set(ckpt.names) ^ set(self.files[0].names))[0]
                    raise ValueError(f"{ckpt.path} and {self.files[0].path} cover different tensors ({odd!r} is in one only)")
            if self.per_task:
                self.files = _match_by_origin(self.files, origins)
            elif json.loads(self.files[0].metadata.get(TASK_FINGERPRINTS, "null")) != list(origins):
                raise ValueError(f"{self.files[0].path} was not learned for these task vectors in this order (its "
                                 f"{TASK_FINGERPRINTS} differ from the tasks' origins): learn it again for them")
            self.names = [n for n in base.float_names if n in set(self.files[0].names)]
            unknown = sorted(set(self.files[0].names) - set(self.names))
            if unknown:
                raise ValueError(f"{self.files[0].path}: statistics of {unknown[0]!r}, which the base has no tensor of")
            for name in self.names:
                want = statistics_shape(kind, base.shapes[name], num_tasks)
                for ckpt in self.files:
                    if tuple(ckpt.shapes[name]) != want:
                        raise ValueError(f"{ckpt.path}: {kind} statistics of {name!r} are shaped "
                                         f"{tuple(ckpt.shapes[name])}, the base's tensor {tuple(base.shapes[name])} needs {want}")
        except BaseException:
            self.close()
            raise

    def stack(self, name: str, device: torch.device) -> torch.Tensor | None:
        """(T, ...) statistics of tensor `name`, or None when the tasks have none for it."""
        if name not in self.files[0].shapes:
            return None
        if not self.per_task:
            return self.files[0].get_float(name).to(device)
        return torch.stack([ckpt.get_float(name) for ckpt in self.files]).to(device)

    def stream(self, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, statistics) of every tensor that has statistics, in the base's order (TensorStream.statistics)."""
        for name in self.names:
            yield name, self.stack(name, device)

    def close(self) -> None:
        for ckpt in self.files:
            ckpt.close()


def tensor_kwargs(
    kwargs: Mapping[str, Any], statistics: TaskStatistics | None, name: str, device: torch.device,
) -> Mapping[str, Any]:
    """The method's keyword arguments for tensor `name`: with its statistics for a data-aware method."""
    return kwargs if statistics is None else {**kwargs, "statistics": statistics.stack(name, device)}

