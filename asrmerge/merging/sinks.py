"""The merge's outputs (sinks): the merged task vector file, the merged model folder, the diagnostics.

Each sink is a context manager that receives, in the base's tensor order, every merged τ (float32, on the CPU,
checked finite) with θ₀ and the tensor's diagnostics record, through one method: `write(name, theta0, merged,
record)`. A sink leaves nothing behind when the merge fails: its files appear when its context closes without an
error (asrmerge.merging.checkpoint.SafetensorsWriter and asrmerge.atomic.staged_folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from asrmerge import layout
from asrmerge.atomic import staged_folder
from asrmerge.guard import check_outputs
from asrmerge.merging.checkpoint import INDEX_NAME, WEIGHTS_NAME, Checkpoint, SafetensorsWriter, TensorEntry
from asrmerge.merging.diagnostics import DiagnosticsCollector
from asrmerge.merging.linalg import theta_plus

#: Weight files that a model folder does not copy from the base folder (it writes its own model.safetensors).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt")


class Sink(Protocol):
    """Where merged tensors go; entered before the first tensor, closed after the last."""

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc: Any) -> bool | None: ...

    def write(self, name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
        """Tensor `name` (or a slice of it): θ₀, the merged τ, and its diagnostics record (None when not asked)."""


@contextlib.contextmanager
def model_folder(
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


class TaskVectorSink:
    """The merged τ as one float32 safetensors file (written by a background thread as tensors arrive).

    `owns(tensor)`: whether the tensor is one of the reader's reused buffers, which the writer thread must not hold.
    """

    def __init__(self, path: str | os.PathLike[str], entries: Sequence[TensorEntry], metadata: Mapping[str, str],
                 owns: Callable[[torch.Tensor], bool]):
        self._writer = SafetensorsWriter(path, entries, metadata, background=True)
        self._owns = owns

    def __enter__(self) -> "TaskVectorSink":
        self._writer.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._writer.__exit__(*exc)

    def write(self, name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
        self._writer.write_part(name, merged.clone() if self._owns(merged) else merged)


class ModelFolderSink:
    """θ₀ + λ·τ in the base's dtypes as a transformers folder (`model_folder`): the base's other tensors (those
    without a task vector) are copied at their place in storage order, its config and processor files beside."""

    def __init__(self, base: Checkpoint, base_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], lam: float,
                 metadata: Mapping[str, str], info: Mapping[str, Any], inputs: Sequence[str | os.PathLike[str]]):
        self._base, self._lam = base, float(lam)
        self._folder = model_folder(base_dir, out_dir, info, inputs)
        self._metadata = dict(metadata)
        self._stack = contextlib.ExitStack()
        merged_names = set(base.float_names)
        self._others = [n for n in base.names if n not in merged_names]
        self._position = {n: i for i, n in enumerate(base.names)}

    def __enter__(self) -> "ModelFolderSink":
        with contextlib.ExitStack() as opening:
            staging = opening.enter_context(self._folder)
            entries = [TensorEntry(n, self._base.dtypes[n], self._base.shapes[n]) for n in self._base.names]
            self._writer = opening.enter_context(
                SafetensorsWriter(staging / WEIGHTS_NAME, entries, self._metadata, background=True))
            self._stack = opening.pop_all()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        if exc[0] is None:
            self._stack.callback(self._copy_others, len(self._base.names))  # runs before the writer closes
        return self._stack.__exit__(*exc)

    def _copy_others(self, before: int) -> None:
        """The base's tensors without a task vector that are stored before position `before`."""
        while self._others and self._position[self._others[0]] < before:
            name = self._others.pop(0)
            self._writer.write(name, self._base.get(name))

    def write(self, name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
        self._copy_others(self._position[name])
        self._writer.write_part(name, theta_plus(theta0, merged, self._lam).to(self._base.dtypes[name]))


class DiagnosticsSink:
    """Per-tensor diagnostics (asrmerge.merging.diagnostics) as one JSON file, written after the merge succeeded."""

    def __init__(self, path: str | os.PathLike[str], header: Mapping[str, Any]):
        self._path = path
        self._collector = DiagnosticsCollector(header)

    def __enter__(self) -> "DiagnosticsSink":
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        if exc[0] is None:
            self._collector.write(self._path)
        return None

    def write(self, name: str, theta0: torch.Tensor, merged: torch.Tensor, record: dict[str, Any] | None) -> None:
        if record is not None:
            self._collector.put(name, record)
