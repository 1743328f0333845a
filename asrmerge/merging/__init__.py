"""The merge engine: registered merge methods over task vectors, streamed tensor by tensor through safetensors files.

Public API:
    REGISTRY, MergeMethod, ParamSpec, register, get_method, resolve_params, list_methods   (registry)
    compute_task_vector, merge, apply_task_vector, export_merged_model, DEFAULT_SVD_EXCLUDE (engine)
    open_checkpoint, Checkpoint                                                             (checkpoint)
    polar_factor, newton_schulz, effective_rank                                             (linalg)
"""

from asrmerge.merging.checkpoint import Checkpoint, open_checkpoint
from asrmerge.merging.engine import (
    DEFAULT_SVD_EXCLUDE,
    apply_task_vector,
    compute_task_vector,
    export_merged_model,
    merge,
    tensor_generator,
)
from asrmerge.merging.linalg import effective_rank, newton_schulz, polar_factor
from asrmerge.merging.registry import (
    REGISTRY,
    MergeMethod,
    ParamSpec,
    get_method,
    list_methods,
    register,
    resolve_params,
)

__all__ = [
    "DEFAULT_SVD_EXCLUDE",
    "REGISTRY",
    "Checkpoint",
    "MergeMethod",
    "ParamSpec",
    "apply_task_vector",
    "compute_task_vector",
    "effective_rank",
    "export_merged_model",
    "get_method",
    "list_methods",
    "merge",
    "newton_schulz",
    "open_checkpoint",
    "polar_factor",
    "register",
    "resolve_params",
    "tensor_generator",
]
