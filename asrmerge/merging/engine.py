"""Streaming merge engine: task vectors, merges and exported models, one tensor at a time.

A merge is four parts, each in its module:

- the reader (asrmerge.merging.reader) reads θ₀ and the stacked τ_t of each tensor (from task-vector files, or as
  θ_t − θ₀ from fine-tuned checkpoints), checked against the base, with the data-aware statistics;
- the plan (asrmerge.merging.plan) says, before any tensor is read, which tensors are merged in which order,
  whole or in slices, side by side or not;
- the executor (`_execute` here, with the threads of asrmerge.merging.runtime) merges each piece with the method
  and hands the results on in order;
- the sinks (asrmerge.merging.sinks) write them: the merged τ file, θ₀ + λ·τ as a model folder, the diagnostics,
  in the same pass, each atomically (nothing half-written on error).

Peak memory is about (T + a few) × the largest tensor, and a few MiB for elementwise methods (merged in slices).
Speed (benchmarks/merge_speed.py): the reader reads the next piece while the current one is merged, with one
OpenMP thread of its own; a background writer flushes each output as it goes; SVD methods merge whole tensors side
by side on CPU, one LAPACK thread each, in the same bytes as a one-thread run.

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
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from asrmerge import layout
from asrmerge.defaults import default
from asrmerge.merging.checkpoint import (
    BASE_FINGERPRINT,
    FINETUNED_FINGERPRINT,
    FLOAT_DTYPES,
    WEIGHTS_NAME,
    Checkpoint,
    SafetensorsWriter,
    TensorEntry,
    all_finite,
    check_compatible,
    open_checkpoint,
)
from asrmerge.merging.diagnostics import diagnostics_header, tensor_record
from asrmerge.merging.linalg import record_orthogonality, theta_plus
from asrmerge.merging.plan import MergePlan, TensorStep, plan_merge
from asrmerge.merging.reader import (
    TaskStatistics,
    TensorReader,
    check_differs_from_base,
    input_origin,
    open_inputs,
    tensor_kwargs,
)
from asrmerge.merging.registry import get_method, resolve_params
from asrmerge.merging.runtime import cpu_workers, map_side_by_side, side_by_side_pool, tune_allocator
from asrmerge.merging.sinks import DiagnosticsSink, ModelFolderSink, Sink, TaskVectorSink, model_folder
from asrmerge.merging.spec import MergeMethod, TensorStream

log = logging.getLogger(__name__)

#: Regexes (re.search on the tensor name) of 2-D tensors that subspace methods must not decompose (Whisper).
DEFAULT_SVD_EXCLUDE: tuple[str, ...] = default("merge.exclude_from_svd")


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



def _merge_one(
    method: MergeMethod,
    step: TensorStep,
    stack: torch.Tensor,
    base_tensor: torch.Tensor,
    kwargs: Mapping[str, Any],
    seed: int,
    svd_dtype: torch.dtype,
    map_tasks: Callable = map,
) -> torch.Tensor:
    if base_tensor.numel() == 0:
        return torch.zeros_like(base_tensor)  # no entries, nothing to merge (quantiles, top-k, minima are undefined)
    if step.mean_only:
        return stack.mean(dim=0)
    call = dict(kwargs)
    if method.uses_rng:
        # Drawn on the CPU whatever the merge device: CUDA's generator gives other numbers for the same seed, and
        # a merge must not depend on where it ran.
        call["generator"] = tensor_generator(seed, step.name)
    if method.uses_svd:
        call["svd_dtype"] = svd_dtype
        call["map_tasks"] = map_tasks
    try:
        return method.fn(stack, base_tensor, **call)
    except (ValueError, torch.linalg.LinAlgError) as err:  # one line naming the method and the tensor
        raise ValueError(f"{method.name} on tensor {step.name}: {err}") from None


@dataclass(frozen=True)
class _PieceMerger:
    """Merges one piece of the plan (a tensor or a slice) on `device`: the method with its resolved parameters and
    pre-pass results (`kwargs`), and with `diagnose` the piece's diagnostics record (asrmerge.merging.diagnostics),
    computed in the thread that merged it, so diagnostics ride on whichever path the tensor took."""

    method: MergeMethod
    kwargs: Mapping[str, Any]
    statistics: TaskStatistics | None
    seed: int
    svd_dtype: torch.dtype
    device: torch.device
    diagnose: bool

    def arguments(self, name: str) -> Mapping[str, Any]:
        """The method's keyword arguments for tensor `name` (read on the engine's thread: statistics come from files)."""
        return tensor_kwargs(self.kwargs, self.statistics, name, self.device)

    def __call__(self, step: TensorStep, stack: torch.Tensor, theta0: torch.Tensor, kwargs: Mapping[str, Any],
                 map_tasks: Callable = map) -> tuple[torch.Tensor, dict[str, Any] | None]:
        stack, theta0 = stack.to(self.device), theta0.to(self.device)
        if not self.diagnose:
            return _merge_one(self.method, step, stack, theta0, kwargs, self.seed, self.svd_dtype, map_tasks), None
        # The orthogonality recorder costs one svdvals per Newton–Schulz factor: only active for diagnostics.
        with record_orthogonality() as ns_errors:
            merged = _merge_one(self.method, step, stack, theta0, kwargs, self.seed, self.svd_dtype, map_tasks)
        return merged, tensor_record(stack, merged, ns_errors)


class _Outputs:
    """Checks each merged piece (finite, float32, on the CPU) and hands it to every sink, in the order given."""

    def __init__(self, method: str, sinks: Sequence[Sink]):
        self.method, self.sinks = method, list(sinks)

    def __call__(self, name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
        merged = merged.to(torch.float32)
        if not all_finite(merged):
            raise ValueError(f"method {self.method!r} produced NaN/Inf for tensor {name!r}")
        merged = merged.cpu()
        for sink in self.sinks:
            sink.write(name, theta0, merged, record)


class _InOrder:
    """The results of the pieces in flight, handed to the outputs in the reader's order.

    Pieces merged side by side are futures of the pool; a piece merged on the engine's thread while others are in
    flight waits behind them as a finished future holding copies (the reader reuses its buffers)."""

    def __init__(self, workers: int, outputs: _Outputs):
        self.workers, self.outputs = workers, outputs
        self.queue: collections.deque[tuple[str, torch.Tensor, Future[tuple], bool]] = collections.deque()

    def put(self, name: str, theta0: torch.Tensor, result: Future[tuple], pooled: bool) -> None:
        self.queue.append((name, theta0, result, pooled))
        self.flush()

    def flush(self, wait: bool = False) -> None:
        """Write the queue's head while it is done (or `wait` for it), while the workers are all busy."""
        while self.queue and (wait or self.queue[0][2].done()
                              or sum(pooled for *_, pooled in self.queue) >= self.workers):
            name, theta0, result, _ = self.queue.popleft()
            self.outputs(name, theta0, *result.result())


def _execute(plan: MergePlan, reader: TensorReader, merger: _PieceMerger, outputs: _Outputs) -> None:
    """The executor loop: every piece of the plan read, merged (side by side on the pool's workers, one OpenMP
    thread each, or here) and handed to the outputs in order.

    SVD merges are mostly LAPACK calls that scale poorly with threads (asrmerge.merging.runtime), so whole tensors
    of SVD methods go to the pool; for the memory-bound methods the copies would cost more than they gain."""
    steps = {step.name: step for step in plan.steps}
    in_order = _InOrder(plan.workers, outputs)
    for name, theta0, stack in reader.stream(plan.reads()):
        step = steps[name]
        if step.side_by_side:
            theta0 = theta0.clone()
            result = side_by_side_pool(plan.workers).submit(merger, step, stack.clone(), theta0, merger.arguments(name))
            in_order.put(name, theta0, result, pooled=True)
            continue
        if step.whole:
            in_order.flush(wait=True)  # a large tensor: no copies of it in the queue
        merged, record = merger(step, stack, theta0, merger.arguments(name), map_side_by_side)
        if not in_order.queue:
            outputs(name, theta0, merged, record)
            continue
        done: Future[tuple] = Future()
        done.set_result((merged.clone() if reader.owns(merged) else merged, record))
        in_order.put(name, theta0.clone(), done, pooled=False)
    in_order.flush(wait=True)


def _device_stream(reader: TensorReader, reads: Sequence[tuple[str, tuple[int, ...], int | None]],
                   device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    for name, _, stack in reader.stream(reads):
        yield name, stack.to(device)


def _prepass(method: MergeMethod, params: Mapping[str, Any], plan: MergePlan, reader: TensorReader,
             statistics: TaskStatistics | None, device: torch.device) -> dict[str, Any]:
    """A method's model-wide pre-pass (`MergeMethod.global_stats`, e.g. TIES scope="global"): extra streams over
    the inputs before the merge; its results join the method's keyword arguments."""
    if method.global_stats is None:
        return {}
    stream = TensorStream(open=functools.partial(_device_stream, reader, plan.prepass_reads(), device),
                          numel=plan.numel, num_tasks=plan.num_tasks,
                          statistics=None if statistics is None else functools.partial(statistics.stream, device))
    return method.global_stats(stream, params)


def _check_request(
    method: MergeMethod, base: str | os.PathLike[str], task_vectors: Sequence[Any] | None, finetuned: Sequence[Any] | None,
    out_path: Any, out_model: Any, statistics: Sequence[Any], svd_dtype: torch.dtype,
) -> list[str | os.PathLike[str]]:
    """The merge's inputs (task-vector files or fine-tunes), after the checks that need no file read."""
    if (task_vectors is None) == (finetuned is None):
        raise ValueError("give exactly one of task_vectors or finetuned")
    if out_path is None and out_model is None:
        raise ValueError("give out_path (merged task vector) and/or out_model (merged model folder)")
    if out_model is not None and not Path(base).is_dir():
        raise ValueError(f"out_model needs the base model folder (for its config files), got {base}")
    paths = list(task_vectors if task_vectors is not None else finetuned or [])
    if not paths:
        raise ValueError("no task vectors / fine-tuned models given")
    if method.statistics is None and statistics:
        raise ValueError(f"method {method.name!r} uses no statistics, yet {len(statistics)} statistics files were given")
    if method.statistics is not None and not statistics:
        raise ValueError(f"method {method.name!r} needs {method.statistics} statistics (--statistics)")
    if svd_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"svd_dtype must be torch.float32 or torch.float64, got {svd_dtype}")
    return paths


def _merge_metadata(method: MergeMethod, params: Mapping[str, Any], seed: int, base: str | os.PathLike[str],
                    base_fingerprint: str, paths: Sequence[Any], from_finetuned: bool, statistics: Sequence[Any]) -> dict[str, str]:
    """The merged task vector's safetensors metadata (the model folder's adds its kind and λ)."""
    return {
        "format": "pt",
        "kind": layout.MERGED_TASK_VECTOR_KIND,
        "method": method.name,
        "params": _metadata_json(params),
        "seed": str(seed),
        "base": str(base),
        BASE_FINGERPRINT: base_fingerprint,
        "inputs": _metadata_json([str(p) for p in paths]),
        "input_kind": "finetuned" if from_finetuned else "task_vectors",
        "default_lambdas": _metadata_json(list(method.default_lambdas)),
        **({"statistics": _metadata_json([str(p) for p in statistics])} if statistics else {}),
    }


def _sinks(base_ckpt: Checkpoint, base: str | os.PathLike[str], metadata: Mapping[str, str], reader: TensorReader,
           out_path: Any, out_model: Any, lam: float, diagnostics_path: Any, params: Mapping[str, Any], seed: int,
           paths: Sequence[Any]) -> list[Sink]:
    """The outputs asked for, diagnostics first (entered first, its file is written last, after the others)."""
    sinks: list[Sink] = []
    if diagnostics_path is not None:
        sinks.append(DiagnosticsSink(diagnostics_path, diagnostics_header(metadata)))
    if out_path is not None:
        entries = [TensorEntry(n, torch.float32, base_ckpt.shapes[n]) for n in base_ckpt.float_names]
        sinks.append(TaskVectorSink(out_path, entries, metadata, reader.owns))
    if out_model is not None:
        info = {"method": metadata["method"], "params": dict(params), "seed": seed, "lambda": float(lam),
                "base": str(base), "inputs": [str(p) for p in paths], "input_kind": metadata["input_kind"]}
        model_meta = {**metadata, "kind": layout.MERGED_MODEL_KIND, "lambda": repr(float(lam))}
        sinks.append(ModelFolderSink(base_ckpt, base, out_model, lam, model_meta, info, paths))
    return sinks


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

    Outputs (at least one): `out_path`, the merged τ (float32 safetensors); `out_model`, a transformers folder of
    θ₀ + λ·τ (`lam`) in the base's dtypes with the base folder's config/processor files: the same bytes as `merge`
    to a file and `export_merged_model`. Inputs: exactly one of `task_vectors` (files of `compute_task_vector`) or
    `finetuned` (checkpoints; τ_t = θ_t − θ₀ on the fly). Random methods get a per-tensor generator seeded from
    (seed, tensor name): the same inputs and seed give the same bytes. `exclude_from_svd` (regexes) routes matching
    tensors of subspace methods to the mean of τ_t. `diagnostics_path`: per-tensor diagnostics JSON (about T + 1
    svdvals per matrix). `statistics`: a data-aware method's files, one per task (asrmerge.training.statistics) or
    AdaMerging's one file of coefficients (asrmerge.training.adamerging). Metadata: method, resolved params, seed,
    inputs, default λ grid (and λ for the model). Returns `out_path` if given, else `out_model`.
    """
    spec = get_method(method)
    resolved = resolve_params(spec, params or {})
    statistics = list(statistics or [])
    paths = _check_request(spec, base, task_vectors, finetuned, out_path, out_model, statistics, svd_dtype)
    from_finetuned, dev = finetuned is not None, _resolve_device(device)
    tune_allocator()
    with open_checkpoint(base) as base_ckpt, contextlib.ExitStack() as resources:
        inputs = open_inputs(base_ckpt, paths, from_finetuned)
        for ckpt in inputs:
            resources.callback(ckpt.close)
        reader = TensorReader(base_ckpt, inputs, from_finetuned)
        task_statistics = None
        if spec.statistics is not None:
            origins = [input_origin(ckpt, from_finetuned) for ckpt in inputs]
            task_statistics = resources.enter_context(contextlib.closing(
                TaskStatistics(spec.statistics, base_ckpt, statistics, origins)))
        workers = cpu_workers() if spec.uses_svd and dev.type == "cpu" else 1
        plan = plan_merge(spec, resolved, base_ckpt.shapes, base_ckpt.float_names, len(inputs), exclude_from_svd,
                          diagnostics_path is not None, workers)
        kwargs = {**resolved, **_prepass(spec, resolved, plan, reader, task_statistics, dev)}
        metadata = _merge_metadata(spec, resolved, seed, base, base_ckpt.fingerprint, paths, from_finetuned, statistics)
        sinks = [resources.enter_context(sink) for sink in _sinks(
            base_ckpt, base, metadata, reader, out_path, out_model, lam, diagnostics_path, resolved, seed, paths)]
        log.info("merging %d task vectors with %s %s on %s%s", len(inputs), spec.name, resolved, dev,
                 " (elementwise, in slices)" if plan.elementwise else "")
        merger = _PieceMerger(spec, kwargs, task_statistics, seed, svd_dtype, dev, diagnostics_path is not None)
        _execute(plan, reader, merger, _Outputs(spec.name, sinks))
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
    with model_folder(base_dir, out_dir, info, [task_vector_path], overwrite, extra_files) as staging:
        apply_task_vector(base_dir, task_vector_path, lam, staging / WEIGHTS_NAME)
    log.info("exported θ0 + %s·τ -> %s", lam, out_dir)
    return Path(out_dir)
