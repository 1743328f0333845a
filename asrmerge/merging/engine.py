"""Streaming merge engine: task vectors, merges and exported models, one tensor at a time.

Peak memory is about (T + a few) × the largest tensor: for each named tensor the engine reads τ_t of all T tasks
(from task-vector files, or as θ_t − θ₀ from fine-tuned checkpoints), runs the method on `device`, and appends the
merged τ to the output file (`checkpoint.SafetensorsWriter`: atomic, nothing half-written on error) and/or θ₀ + λ·τ
to a merged model folder, in the same pass. Elementwise methods (Model Soup, Task Arithmetic, TIES and PCB with
scope="global", Consensus TA) go through each tensor in slices of SLICE_ELEMENTS entries, so their peak memory is
a few MiB whatever the model, and the slices' arithmetic stays in the CPU caches; so do the tensors that subspace
methods only average (non-matrices, embeddings).

Speed (benchmarks/merge_speed.py): a background thread reads the next slice, or the next whole tensor up to
PREFETCH_BYTES, while the current one is merged, with one OpenMP thread of its own; a background writer flushes the
output as it goes; SVD methods merge whole tensors side by side on CPU, one LAPACK thread each (LAPACK's SVD gains
little from a second thread, two SVDs side by side nearly twice as much), in the same bytes as a one-thread run.

Whisper notes: DEFAULT_SVD_EXCLUDE keeps the token embeddings (tied to `proj_out`) and the positional tables out of
the subspace methods' SVD (they are lookup tables, not linear maps): they get the mean of τ_t. The encoder's
sinusoidal `model.encoder.embed_positions.weight` is frozen during fine-tuning, so its τ is 0 for every task and any
method leaves it at θ₀.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from asrmerge import layout
from asrmerge.atomic import staged_folder
from asrmerge.defaults import default
from asrmerge.guard import check_outputs
from asrmerge.merging.checkpoint import (
    BASE_FINGERPRINT,
    FINETUNED_FINGERPRINT,
    FLOAT_DTYPES,
    MODEL_FINGERPRINT,
    TASK_FINGERPRINTS,
    INDEX_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    SafetensorsWriter,
    TensorEntry,
    all_finite,
    check_compatible,
    open_checkpoint,
)
from asrmerge.merging.diagnostics import DiagnosticsCollector, diagnostics_header, tensor_record
from asrmerge.merging.linalg import record_orthogonality, theta_plus
from asrmerge.merging.runtime import cpu_workers, map_side_by_side, prefetch_thread, side_by_side_pool, tune_allocator
from asrmerge.merging.registry import get_method, resolve_params
from asrmerge.merging.spec import (
    STATISTICS_FILE_KIND,
    STATISTICS_KINDS,
    MergeMethod,
    TensorStream,
    statistics_shape,
)

log = logging.getLogger(__name__)

#: Regexes (re.search on the tensor name) of 2-D tensors that subspace methods must not decompose (Whisper).
DEFAULT_SVD_EXCLUDE: tuple[str, ...] = default("merge.exclude_from_svd")

#: Weight files that `export_merged_model` does not copy from the base folder (it writes its own model.safetensors).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt")


def tensor_seed(seed: int, name: str) -> int:
    """Stable 63-bit seed from (seed, tensor name): results never depend on iteration order or PYTHONHASHSEED."""
    digest = hashlib.sha256(f"{int(seed)}\x00{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """A CPU torch.Generator seeded with `tensor_seed(seed, name)`."""
    generator = torch.Generator()
    generator.manual_seed(tensor_seed(seed, name))
    return generator


def _resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def _metadata_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# -------------------------------------------------------------------------------------------------- task vectors


def compute_task_vector(base: str | os.PathLike[str], finetuned: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write τ = θ_t − θ₀ (float32, every floating-point tensor of the base) to one safetensors file.

    Names, shapes and model_type are validated before anything is written; NaN/Inf raise ValueError naming the tensor
    and file, and so does a fine-tune with the base's weights (the output is then not created). Metadata: kind, base
    and finetuned paths and their content fingerprints (checked by every consumer: asrmerge.merging.checkpoint).
    """
    with open_checkpoint(base) as base_ckpt, open_checkpoint(finetuned) as ft_ckpt:
        check_compatible(base_ckpt, ft_ckpt)
        check_differs_from_base(base_ckpt, ft_ckpt)
        names = base_ckpt.float_names
        entries = [TensorEntry(n, torch.float32, base_ckpt.shapes[n]) for n in names]
        metadata = {"format": "pt", "kind": layout.TASK_VECTOR_KIND, "base": str(base), "finetuned": str(finetuned),
                    BASE_FINGERPRINT: base_ckpt.fingerprint, FINETUNED_FINGERPRINT: ft_ckpt.fingerprint}
        with SafetensorsWriter(out_path, entries, metadata) as writer:
            changed = False
            for name in names:
                tau = ft_ckpt.get_float(name) - base_ckpt.get_float(name)
                changed = changed or bool(tau.any())
                writer.write(name, tau)
            if not changed:  # the writer drops its output on this error
                raise ValueError(f"fine-tune {finetuned} has the weights of the base {base}: its task vector is zero")
    log.info("task vector %s - %s -> %s (%d tensors)", finetuned, base, out_path, len(names))
    return Path(out_path)


#: Entries per task in one slice of an elementwise merge: the (T, n) float32 stack (T MiB) and the method's
#: temporaries stay in the CPU caches, so the only pass over main memory is reading the inputs.
SLICE_ELEMENTS = 1 << 18
#: Entries per task in one slice of a model-wide pre-pass stream (bounds its memory on large tensors).
STATS_SLICE_ELEMENTS = 1 << 22
#: Whole tensors whose θ₀ + stack take at most this many bytes are read ahead while the previous one is merged.
PREFETCH_BYTES = 1 << 28


def _small_enough(numel: int, num_tasks: int) -> bool:
    """Whether θ₀ and the (T, numel) float32 stack of a tensor fit PREFETCH_BYTES (read ahead, copied to a worker)."""
    return (num_tasks + 1) * numel * 4 <= PREFETCH_BYTES


class _Reader:
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

    def stream(self, plan: Sequence[tuple[str, tuple[int, ...], int | None]]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, θ₀, τ stack) for each (name, shape, limit) of `plan`, in order: the whole tensor, shaped (*shape) and
        (T, *shape), or with `limit`, consecutive slices of at most `limit` flattened entries, shaped (n,) and (T, n).

        Pieces alternate between two buffer sets, and the next piece is read in a background thread while the caller
        works on the current one. Whole tensors larger than PREFETCH_BYTES (θ₀ and the stack) are not read ahead
        (that would double the peak memory): they are read when asked, into set 0."""
        pieces: list[tuple[str, tuple[int, ...], int, int, bool]] = []
        for name, shape, limit in plan:
            numel = math.prod(shape)
            if limit is None or numel <= limit:
                pieces.append((name, shape, 0, numel, False))
            else:
                pieces += [(name, shape, start, min(limit, numel - start), True) for start in range(0, numel, limit)]
        ahead = [sliced or _small_enough(count, len(self.inputs)) for _, _, _, count, sliced in pieces]
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


def _open_inputs(base_ckpt: Checkpoint, paths: Sequence[str | os.PathLike[str]], from_finetuned: bool) -> list[Checkpoint]:
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


class _Statistics:
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


def _tensor_kwargs(
    kwargs: Mapping[str, Any], statistics: _Statistics | None, name: str, device: torch.device,
) -> Mapping[str, Any]:
    """The method's keyword arguments for tensor `name`: with its statistics for a data-aware method."""
    return kwargs if statistics is None else {**kwargs, "statistics": statistics.stack(name, device)}


def _merge_one(
    method: MergeMethod,
    name: str,
    stack: torch.Tensor,
    base_tensor: torch.Tensor,
    kwargs: Mapping[str, Any],
    seed: int,
    svd_dtype: torch.dtype,
    excluded: Callable[[str], bool],
    map_tasks: Callable = map,
) -> torch.Tensor:
    if base_tensor.numel() == 0:
        return torch.zeros_like(base_tensor)  # no entries, nothing to merge (quantiles, top-k, minima are undefined)
    if method.matrix_only and (stack.ndim != 3 or excluded(name)):
        return stack.mean(dim=0)
    call = dict(kwargs)
    if method.uses_rng:
        # Drawn on the CPU whatever the merge device: CUDA's generator gives other numbers for the same seed, and
        # a merge must not depend on where it ran.
        call["generator"] = tensor_generator(seed, name)
    if method.uses_svd:
        call["svd_dtype"] = svd_dtype
        call["map_tasks"] = map_tasks
    try:
        return method.fn(stack, base_tensor, **call)
    except (ValueError, torch.linalg.LinAlgError) as err:  # one line naming the method and the tensor
        raise ValueError(f"{method.name} on tensor {name}: {err}") from None


def _merge_tapped(
    diagnose: bool, method: MergeMethod, name: str, stack: torch.Tensor, *args: Any, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """`_merge_one`, and with `diagnose` the tensor's diagnostics record (asrmerge.merging.diagnostics), computed in
    the thread that merged it: diagnostics ride on whichever path the tensor took, whole or side by side."""
    if not diagnose:
        return _merge_one(method, name, stack, *args, **kwargs), None
    # The orthogonality recorder costs one svdvals per Newton–Schulz factor: only active when diagnostics are wanted.
    with record_orthogonality() as ns_errors:
        merged = _merge_one(method, name, stack, *args, **kwargs)
    return merged, tensor_record(stack, merged, ns_errors)


@contextlib.contextmanager
def _model_folder(
    base_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], info: Mapping[str, Any],
    inputs: Sequence[str | os.PathLike[str]] = (), overwrite: bool = False, extra_files: Mapping[str, str] | None = None,
) -> Iterator[Path]:
    """Build a transformers folder atomically: yields a temporary sibling of `out_dir` holding every non-weight, non-hidden
    file of the base folder (config.json, generation_config.json, processor/tokenizer files); the caller writes the weights
    into it; on success merge_info.json (`info`) and `extra_files` (name -> text: a model card, a recipe) are added
    and the folder replaces `out_dir`, on error it is removed."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not base_dir.is_dir():
        raise FileNotFoundError(f"base model folder not found: {base_dir}")
    # the merge's inputs too: never replaced by its output; an earlier output only when the command says --overwrite
    check_outputs([base_dir, *inputs], [], [out_dir], overwrite=overwrite)
    with staged_folder(out_dir, replace=overwrite) as staging:
        for item in sorted(base_dir.iterdir()):
            # Hidden files (a workflow's .snakemake_timestamp) belong to the folder, not to the model.
            if item.is_file() and not item.name.startswith(".") and not item.name.endswith(_WEIGHT_SUFFIXES) \
                    and item.name != INDEX_NAME:
                shutil.copyfile(item, staging / item.name)
        yield staging
        (staging / layout.MERGE_INFO).write_text(json.dumps(dict(info), indent=1))
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")


def merge(
    base: str | os.PathLike[str],
    *,
    task_vectors: Sequence[str | os.PathLike[str]] | None = None,
    finetuned: Sequence[str | os.PathLike[str]] | None = None,
    method: str,
    params: Mapping[str, Any] | None = None,
    out_path: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    lam: float = 1.0,
    seed: int = default("seed"),
    device: str = default("merge.device"),
    svd_dtype: torch.dtype = torch.float32,
    exclude_from_svd: Sequence[str] = DEFAULT_SVD_EXCLUDE,
    diagnostics_path: str | os.PathLike[str] | None = None,
    statistics: Sequence[str | os.PathLike[str]] | None = None,
) -> Path:
    """Merge T task vectors with a registered method, in one streaming pass over the inputs.

    Outputs (at least one): `out_path`, the merged task vector τ (float32 safetensors); `out_model`, a transformers
    folder holding θ₀ + λ·τ (`lam`) in the base's dtypes with the base folder's config/processor files, built
    atomically: the same bytes as `merge` to a file followed by `export_merged_model`, without the τ file's round
    trip. Give exactly one of `task_vectors` (files from `compute_task_vector`) or `finetuned` (checkpoints;
    τ_t = θ_t − θ₀ on the fly). Random methods get a per-tensor generator seeded from (seed, tensor name): the same
    inputs and seed give bitwise identical files. Methods with a `global_stats` pre-pass (e.g. TIES scope="global")
    stream the inputs extra times first. Elementwise methods (`MergeMethod.is_elementwise`) are merged in slices of
    SLICE_ELEMENTS entries per task, so their memory does not grow with the tensor size. `exclude_from_svd` (regexes)
    routes matching tensors of subspace methods to the mean of τ_t. `diagnostics_path`: also write per-tensor
    diagnostics JSON (see `diagnostics`; costs about T + 1 svdvals per matrix). `statistics`: for data-aware methods,
    one statistics file per task in the order of the task vectors (asrmerge.training.statistics), or AdaMerging's one
    file of coefficients (asrmerge.training.adamerging).
    Output metadata: method, resolved params, seed, inputs, default λ grid (and λ for the model). Returns `out_path`
    if given, else `out_model`.
    """
    spec = get_method(method)
    resolved = resolve_params(spec, params or {})
    if (task_vectors is None) == (finetuned is None):
        raise ValueError("give exactly one of task_vectors or finetuned")
    if out_path is None and out_model is None:
        raise ValueError("give out_path (merged task vector) and/or out_model (merged model folder)")
    if out_model is not None and not Path(base).is_dir():
        raise ValueError(f"out_model needs the base model folder (for its config files), got {base}")
    paths = list(task_vectors if task_vectors is not None else finetuned or [])
    if not paths:
        raise ValueError("no task vectors / fine-tuned models given")
    statistics = list(statistics or [])
    if spec.statistics is None and statistics:
        raise ValueError(f"method {spec.name!r} uses no statistics, yet {len(statistics)} statistics files were given")
    if spec.statistics is not None and not statistics:
        raise ValueError(f"method {spec.name!r} needs {spec.statistics} statistics (--statistics)")
    if svd_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"svd_dtype must be torch.float32 or torch.float64, got {svd_dtype}")
    dev = _resolve_device(device)
    patterns = [re.compile(p) for p in exclude_from_svd]
    tune_allocator()

    def excluded(name: str) -> bool:
        return any(p.search(name) for p in patterns)

    with open_checkpoint(base) as base_ckpt, contextlib.ExitStack() as resources:
        inputs = _open_inputs(base_ckpt, paths, from_finetuned=finetuned is not None)
        for ckpt in inputs:
            resources.callback(ckpt.close)
        reader = _Reader(base_ckpt, inputs, finetuned is not None)
        names = base_ckpt.float_names
        task_statistics = None
        if spec.statistics is not None:
            origins = [input_origin(ckpt, finetuned is not None) for ckpt in inputs]
            task_statistics = _Statistics(spec.statistics, base_ckpt, statistics, origins)
            resources.callback(task_statistics.close)

        extra: dict[str, Any] = {}
        if spec.global_stats is not None:
            def stream() -> Iterator[tuple[str, torch.Tensor]]:
                for n, _, stack in reader.stream([(n, base_ckpt.shapes[n], STATS_SLICE_ELEMENTS) for n in names]):
                    yield n, stack.to(dev)

            total = sum(base_ckpt.numel(n) for n in names)
            extra = spec.global_stats(TensorStream(open=stream, numel=total, num_tasks=len(inputs),
                                                   statistics=None if task_statistics is None else
                                                   functools.partial(task_statistics.stream, dev)), resolved)
        kwargs = {**resolved, **extra}
        metadata = {
            "format": "pt",
            "kind": layout.MERGED_TASK_VECTOR_KIND,
            "method": spec.name,
            "params": _metadata_json(resolved),
            "seed": str(seed),
            "base": str(base),
            BASE_FINGERPRINT: base_ckpt.fingerprint,
            "inputs": _metadata_json([str(p) for p in paths]),
            "input_kind": "finetuned" if finetuned is not None else "task_vectors",
            "default_lambdas": _metadata_json(list(spec.default_lambdas)),
            **({"statistics": _metadata_json([str(p) for p in statistics])} if statistics else {}),
        }
        collector = None
        if diagnostics_path is not None:
            collector = DiagnosticsCollector(diagnostics_header(metadata))

        sinks: list[Callable[[str, torch.Tensor, torch.Tensor], None]] = []
        if out_path is not None:
            tau_entries = [TensorEntry(n, torch.float32, base_ckpt.shapes[n]) for n in names]
            tau_writer = resources.enter_context(SafetensorsWriter(out_path, tau_entries, metadata, background=True))
            # The writer thread holds the tensor until written: never hand it one of the reader's reused buffers.
            sinks.append(lambda name, theta0, merged: tau_writer.write_part(
                name, merged.clone() if reader.owns(merged) else merged))
        model_writer, others = None, [n for n in base_ckpt.names if n not in set(names)]
        if out_model is not None:
            model_meta = metadata | {"kind": layout.MERGED_MODEL_KIND, "lambda": repr(float(lam))}
            info = {"method": spec.name, "params": resolved, "seed": seed, "lambda": float(lam), "base": str(base),
                    "inputs": [str(p) for p in paths], "input_kind": metadata["input_kind"]}
            staging = resources.enter_context(_model_folder(base, out_model, info, paths))
            model_entries = [TensorEntry(n, base_ckpt.dtypes[n], base_ckpt.shapes[n]) for n in base_ckpt.names]
            model_writer = resources.enter_context(
                SafetensorsWriter(staging / WEIGHTS_NAME, model_entries, model_meta, background=True))
            position = {n: i for i, n in enumerate(base_ckpt.names)}

            def write_model(name: str, theta0: torch.Tensor, merged: torch.Tensor) -> None:
                # Tensors without a task vector are copied from the base at their place in storage order.
                while others and position[others[0]] < position[name]:
                    model_writer.write(others[0], base_ckpt.get(others.pop(0)))
                model_writer.write_part(name, theta_plus(theta0, merged, lam).to(base_ckpt.dtypes[name]))

            sinks.append(write_model)

        elementwise = spec.is_elementwise(resolved)

        def slice_limit(name: str) -> int | None:
            """Slices for elementwise merges, and for the tensors a subspace method only averages; matrices whole
            when diagnostics are wanted (their spectra need the whole matrix)."""
            matrix = len(base_ckpt.shapes[name]) == 2
            if collector is not None and matrix:
                return None
            mean_only = spec.matrix_only and (not matrix or excluded(name))
            return SLICE_ELEMENTS if elementwise or mean_only else None

        def emit(name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
            """Check the merged τ of one tensor (or slice), hand it to the diagnostics and the writers, in order."""
            merged = merged.to(torch.float32)
            if not all_finite(merged):
                raise ValueError(f"method {spec.name!r} produced NaN/Inf for tensor {name!r}")
            if record is not None:
                collector.put(name, record)
            merged = merged.cpu()
            for sink in sinks:
                sink(name, theta0, merged)

        # SVD methods merge whole tensors (up to PREFETCH_BYTES) side by side on CPU, one OpenMP thread each: such a
        # merge is mostly LAPACK calls that scale poorly with threads (see linalg.map_side_by_side; for the other,
        # memory-bound methods the copies cost more than they gain). Workers get copies (the reader reuses its
        # buffers); the pieces merged here meanwhile (slices, large tensors) queue behind them, so that the writers
        # still receive every tensor in order.
        side_by_side = spec.uses_svd and dev.type == "cpu"
        workers = cpu_workers() if side_by_side else 1
        diagnose = collector is not None
        queue: collections.deque[tuple[str, torch.Tensor, Future[tuple], bool]] = collections.deque()

        def emit_ready(wait: bool = False) -> None:
            """Write the queue's head while it is done (or `wait` for it), while workers are busy, or all of it."""
            while queue and (wait or queue[0][2].done() or sum(pooled for *_, pooled in queue) >= workers):
                name, theta0, future, _ = queue.popleft()
                emit(name, theta0, *future.result())

        log.info("merging %d task vectors with %s %s on %s%s", len(inputs), spec.name, resolved, dev,
                 " (elementwise, in slices)" if elementwise else "")
        for name, theta0, stack in reader.stream([(n, base_ckpt.shapes[n], slice_limit(n)) for n in names]):
            whole = slice_limit(name) is None
            if workers > 1 and whole and _small_enough(theta0.numel(), len(inputs)):
                theta0 = theta0.clone()
                future = side_by_side_pool(workers).submit(
                    _merge_tapped, diagnose, spec, name, stack.clone(), theta0,
                    _tensor_kwargs(kwargs, task_statistics, name, dev), seed, svd_dtype, excluded)
                queue.append((name, theta0, future, True))
                emit_ready()
                continue
            if whole:
                emit_ready(wait=True)  # a large tensor: no copies of it in the queue
            merged, record = _merge_tapped(diagnose, spec, name, stack.to(dev), theta0.to(dev),
                                           _tensor_kwargs(kwargs, task_statistics, name, dev), seed, svd_dtype, excluded,
                                           map_side_by_side)
            if not queue:
                emit(name, theta0, merged, record)
                continue
            done: Future[tuple] = Future()
            done.set_result((merged.clone() if reader.owns(merged) else merged, record))
            queue.append((name, theta0.clone(), done, False))
            emit_ready()
        emit_ready(wait=True)
        if model_writer is not None:
            for name in others:
                model_writer.write(name, base_ckpt.get(name))
    if collector is not None:
        collector.write(diagnostics_path)
    log.info("merged %s -> %s", spec.name, ", ".join(str(p) for p in (out_path, out_model) if p is not None))
    return Path(out_path if out_path is not None else out_model)


# ---------------------------------------------------------------------------------------------------------- export


def apply_task_vector(
    base: str | os.PathLike[str], task_vector_path: str | os.PathLike[str], lam: float, out_path: str | os.PathLike[str]
) -> Path:
    """Write θ₀ + λ·τ as one safetensors file with the base's tensor names and dtypes (computed in float32).

    Non-floating-point tensors are copied from the base unchanged. The metadata names τ by its SHA-256, not its
    path, so that the same merge rebuilt elsewhere (asrmerge.merging.recipe) is the same file.
    """
    with open_checkpoint(base) as base_ckpt, open_checkpoint(task_vector_path) as tv_ckpt:
        check_compatible(base_ckpt, tv_ckpt, names=base_ckpt.float_names)
        names = base_ckpt.names
        entries = [TensorEntry(n, base_ckpt.dtypes[n], base_ckpt.shapes[n]) for n in names]
        metadata = {"format": "pt", "kind": layout.MERGED_MODEL_KIND, "base": str(base),
                    "task_vector_sha256": file_sha256(task_vector_path), "lambda": repr(float(lam))}
        with SafetensorsWriter(out_path, entries, metadata) as writer:
            for name in names:
                dtype = base_ckpt.dtypes[name]
                if dtype in FLOAT_DTYPES:
                    writer.write(name, theta_plus(base_ckpt.get_float(name), tv_ckpt.get_float(name), lam).to(dtype))
                else:
                    writer.write(name, base_ckpt.get(name))
    return Path(out_path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def export_merged_model(
    base_dir: str | os.PathLike[str], task_vector_path: str | os.PathLike[str], lam: float, out_dir: str | os.PathLike[str],
    provenance: Mapping[str, Any] | None = None, overwrite: bool = False, extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write θ₀ + λ·τ as a transformers folder loadable with `from_pretrained` (an earlier export in `out_dir` is
    replaced only with `overwrite`: asrmerge.guard.check_replaceable), with `extra_files` (name -> text) beside it.

    The folder gets model.safetensors (base dtype, unsharded), every non-weight file of the base folder (config.json,
    generation_config.json, processor/tokenizer files) and merge_info.json: base, task vector and their SHA-256, λ,
    and `provenance` (e.g. the method and parameters). It is built in a temporary sibling folder and moved into place
    at the end. `merge(..., out_model=...)` writes the same weights in one pass.
    """
    with open_checkpoint(base_dir) as base_ckpt:
        base_files = sorted({file.name for file in base_ckpt.files.values()})
    info = {**dict(provenance or {}), "base": str(base_dir), "task_vector": str(task_vector_path), "lambda": float(lam),
            "sha256": {"task_vector": file_sha256(task_vector_path),
                       **{name: file_sha256(Path(base_dir, name)) for name in base_files}}}
    with _model_folder(base_dir, out_dir, info, [task_vector_path], overwrite, extra_files) as staging:
        apply_task_vector(base_dir, task_vector_path, lam, staging / WEIGHTS_NAME)
    log.info("exported θ0 + %s·τ -> %s", lam, out_dir)
    return Path(out_dir)
