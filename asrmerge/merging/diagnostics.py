"""Merge diagnostics: spectra, effective rank and sign conflicts of task vectors and of the merged task vector.

Per 2-D tensor the engine records
- `task_singular_values` / `merged_singular_values`: the first 32 singular values of each τ_t and of τ,
- `task_effective_rank` / `merged_effective_rank`: entropy effective rank (Roy & Vetterli 2007) — a low merged value
  relative to the tasks' is the "rank collapse" the seed paper describes,
- `task_norms` / `merged_norm`: Frobenius norms,
- `sign_conflict_rate`: fraction of entries where at least one τ_t is > 0 and another < 0,
- `ns_max_orthogonality_error`: for Newton–Schulz orthogonalisation, max_i |σ_i(Q) − 1| over the factors computed
  for this tensor (absent when no NS factor was computed).

Cost: T + 1 `svdvals` per 2-D tensor (plus one per NS factor), i.e. about as much as TSV-M itself; for Whisper
large-v3 on CPU that is on the order of an hour, on a GPU minutes. Pass no diagnostics path to skip it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from asrmerge.atomic import write_json
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


def tensor_diagnostics(task_vectors: torch.Tensor, merged: torch.Tensor, ns_errors: list[float] | None = None) -> dict[str, Any]:
    """Diagnostics of one 2-D tensor: stacked τ_t (T, m, n) and merged τ (m, n)."""
    task_spectra = [_spectrum(tv) for tv in task_vectors]
    merged_spectrum = _spectrum(merged)
    record: dict[str, Any] = {
        "shape": list(merged.shape),
        "task_singular_values": [s[:TOP_SINGULAR_VALUES].tolist() for s in task_spectra],
        "merged_singular_values": merged_spectrum[:TOP_SINGULAR_VALUES].tolist(),
        "task_effective_rank": [effective_rank(s) for s in task_spectra],
        "merged_effective_rank": effective_rank(merged_spectrum),
        "task_norms": [float(torch.linalg.vector_norm(tv)) for tv in task_vectors],
        "merged_norm": float(torch.linalg.vector_norm(merged)),
        "sign_conflict_rate": sign_conflict_rate(task_vectors),
    }
    if ns_errors:
        record["ns_max_orthogonality_error"] = max(ns_errors)
    return record


def tensor_record(task_vectors: torch.Tensor, merged: torch.Tensor, ns_errors: list[float] | None = None) -> dict[str, Any] | None:
    """`tensor_diagnostics` of a non-empty 2-D tensor; None for every other tensor (vectors, empty matrices)."""
    if merged.ndim == 2 and min(merged.shape) > 0:
        return tensor_diagnostics(task_vectors, merged, ns_errors)
    return None


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
