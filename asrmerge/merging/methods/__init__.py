"""Merge-method implementations, one module per family; importing this package registers them all."""

from asrmerge.merging.methods import beyond, data_aware, parameter_space, subspace, task_space  # noqa: F401
