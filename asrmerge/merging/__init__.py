"""The merge engine: registered merge methods over task vectors, streamed tensor by tensor through safetensors files.

Public API:
    REGISTRY, get_method, resolve_params, list_methods                                    (registry)
    MergeMethod, ParamSpec, declare                                                         (spec)
    compute_task_vector, merge, apply_task_vector, export_merged_model, DEFAULT_SVD_EXCLUDE (engine)
    open_checkpoint, Checkpoint                                                             (checkpoint)
    polar_factor, newton_schulz, effective_rank                                             (linalg)
"""

from __future__ import annotations

import importlib
from typing import Any

from asrmerge.merging.linalg import effective_rank, newton_schulz, polar_factor
from asrmerge.merging.registry import REGISTRY, get_method, list_methods, resolve_params
from asrmerge.merging.spec import MergeMethod, ParamSpec, declare

# The engine and the checkpoint reader import torch and safetensors eagerly; they are resolved on first access
# (PEP 562), so that the workflow's parse step, which reads only the registry, does not pay for them.
_ENGINE_EXPORTS = {
    "Checkpoint": "checkpoint",
    "open_checkpoint": "checkpoint",
    "DEFAULT_SVD_EXCLUDE": "engine",
    "apply_task_vector": "engine",
    "compute_task_vector": "engine",
    "export_merged_model": "engine",
    "merge": "engine",
    "tensor_generator": "engine",
}


def __getattr__(name: str) -> Any:
    if name not in _ENGINE_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ENGINE_EXPORTS[name]}"), name)


__all__ = [  # noqa: F822 (resolved by __getattr__)
    "DEFAULT_SVD_EXCLUDE",
    "REGISTRY",
    "Checkpoint",
    "MergeMethod",
    "ParamSpec",
    "apply_task_vector",
    "compute_task_vector",
    "declare",
    "effective_rank",
    "export_merged_model",
    "get_method",
    "list_methods",
    "merge",
    "newton_schulz",
    "open_checkpoint",
    "polar_factor",
    "resolve_params",
    "tensor_generator",
]
