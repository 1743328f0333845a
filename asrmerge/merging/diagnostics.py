"""Merge diagnostics: spectra, effective rank and sign conflicts of task vectors and of the merged task vector.

Per 2-D tensor the engine records
- `task_singular_values` / `merged_singular_values`: the first 32 singular values of each τ_t and of τ,
- `task_effective_rank` / `merged_effective_rank`: entropy effective rank (Roy & Vetterli 2007) — a low merged value
  relative to the tasks' is the "rank collapse" the seed paper describes,
- `task_norms` / `merged_norm`: Frobenius norms,
- `sign_conflict_rate`: fraction of entries where at least one τ_t is > 0 and another < 0,
- `ns_max_orthogonality_error`: for Newton–Schulz orthogonalisation, max_i |σ_i(Q) − 1| over the factors computed
  for this tensor (absent when no NS factor was computed).

Two ways to the same records. During a merge (`merge(..., diagnostics_path=...)`, the merge command's
--diagnostics): T + 1 `svdvals` per 2-D tensor (plus one per NS factor), about as much as TSV-M itself. From files
(`diagnose_merge`, the workflow's merge_diagnostics rule): the per-task part is read from each task vector's cached
spectra (`write_task_spectra`, once per task vector for every merge of the run), so a merge's diagnostics cost one
`svdvals` per matrix, in a job of its own that only the figures' merges need; the merge job stays on its fast paths.
The NS orthogonality error exists only during a merge.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asrmerge.atomic import write_json
from asrmerge.merging.checkpoint import open_checkpoint
from asrmerge.merging.linalg import effective_rank, singular_values

TOP_SINGULAR_VALUES = 32


def _spectrum(matrix: torch.Tensor) -> torch.Tensor:
    return singular_values(matrix).cpu()


def sign_conflict_rate(task_vectors: torch.Tensor) -> float:
    """Fraction of entries where the nonzero signs of the τ_t disagree (some > 0 and some < 0)."""
    if task_vectors.numel() == 0:
        return 0.0
    conflict = (task_vectors > 0).any(dim=0) & (task_vectors < 0).any(dim=0)
    return float(conflict.to(torch.float32).mean())


def spectrum_record(matrix: torch.Tensor) -> dict[str, Any]:
    """The leading singular values, entropy effective rank (of the whole spectrum) and Frobenius norm of one matrix."""
    spectrum = _spectrum(matrix)
    return {"singular_values": spectrum[:TOP_SINGULAR_VALUES].tolist(), "effective_rank": effective_rank(spectrum),
            "norm": float(torch.linalg.vector_norm(matrix))}


def _record(task_spectra: Sequence[Mapping[str, Any]], merged: torch.Tensor, task_vectors: torch.Tensor,
            ns_errors: list[float] | None) -> dict[str, Any]:
    merged_spectrum = spectrum_record(merged)
    record: dict[str, Any] = {
        "shape": list(merged.shape),
        "task_singular_values": [t["singular_values"] for t in task_spectra],
        "merged_singular_values": merged_spectrum["singular_values"],
        "task_effective_rank": [t["effective_rank"] for t in task_spectra],
        "merged_effective_rank": merged_spectrum["effective_rank"],
        "task_norms": [t["norm"] for t in task_spectra],
        "merged_norm": merged_spectrum["norm"],
        "sign_conflict_rate": sign_conflict_rate(task_vectors),
    }
    if ns_errors:
        record["ns_max_orthogonality_error"] = max(ns_errors)
    return record


def has_spectrum(shape: Sequence[int]) -> bool:
    """Diagnostics cover the non-empty matrices (vectors and empty matrices have no spectrum worth showing)."""
    return len(shape) == 2 and min(shape) > 0


def tensor_record(task_vectors: torch.Tensor, merged: torch.Tensor, ns_errors: list[float] | None = None) -> dict[str, Any] | None:
    """Diagnostics of one tensor during a merge, from the stacked τ_t (T, m, n) and the merged τ (m, n); None for
    tensors without a spectrum (vectors, empty matrices)."""
    if not has_spectrum(merged.shape):
        return None
    return _record([spectrum_record(tv) for tv in task_vectors], merged, task_vectors, ns_errors)


def write_task_spectra(task_vector: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Cache the spectrum record of every matrix of one task vector file (JSON: tensor name -> spectrum_record)."""
    with open_checkpoint(task_vector) as tau:
        records = {name: spectrum_record(tau.get_float(name)) for name in tau.float_names
                   if has_spectrum(tau.shapes[name])}
    return write_json(out, {"task_vector": str(task_vector), "tensors": records})


def diagnose_merge(
    merged_task_vector: str | os.PathLike[str], task_vectors: Sequence[str | os.PathLike[str]],
    task_spectra: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
) -> Path:
    """The diagnostics of a finished merge from files: its merged τ, the task vectors it merged (for the sign
    conflicts) and their cached spectra (`write_task_spectra`, in the same order); the same records as during the
    merge, less the NS orthogonality error."""
    spectra = [json.loads(Path(path).read_text())["tensors"] for path in task_spectra]
    with open_checkpoint(merged_task_vector) as merged:
        metadata = dict(merged.metadata)
        inputs = [open_checkpoint(path) for path in task_vectors]
        try:
            collector = DiagnosticsCollector(diagnostics_header(metadata))
            for name in merged.float_names:
                if has_spectrum(merged.shapes[name]):
                    stack = torch.stack([tau.get_float(name) for tau in inputs])
                    collector.put(name, _record([s[name] for s in spectra], merged.get_float(name), stack, None))
        finally:
            for tau in inputs:
                tau.close()
    return collector.write(out)


def diagnostics_header(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The diagnostics file's header from a merged τ's metadata: every field but the format, parameters parsed."""
    return {k: v for k, v in metadata.items() if k != "format"} | {"params": json.loads(metadata["params"])}


@dataclass
class DiagnosticsCollector:
    """Accumulates per-tensor diagnostics and writes them as one JSON file."""

    header: Mapping[str, Any]
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, name: str, record: Mapping[str, Any]) -> None:
        """Keep one tensor's record (`tensor_record`); the file lists tensors in the order they were put."""
        self.tensors[name] = dict(record)

    def summary(self) -> dict[str, Any]:
        records = list(self.tensors.values())
        if not records:
            return {"n_matrices": 0}

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        summary: dict[str, Any] = {
            "n_matrices": len(records),
            "mean_merged_effective_rank": mean([r["merged_effective_rank"] for r in records]),
            "mean_task_effective_rank": mean([mean(r["task_effective_rank"]) for r in records]),
            "mean_sign_conflict_rate": mean([r["sign_conflict_rate"] for r in records]),
        }
        ns = [r["ns_max_orthogonality_error"] for r in records if "ns_max_orthogonality_error" in r]
        if ns:
            summary["ns_max_orthogonality_error"] = max(ns)
        return summary

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write {header..., "summary", "tensors"} atomically."""
        return write_json(path, {**self.header, "summary": self.summary(), "tensors": self.tensors})
