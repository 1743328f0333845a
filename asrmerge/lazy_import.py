"""Deferred imports for modules that the workflow's parse step loads but never runs.

Snakemake imports `asrmerge.workflow.config` (schema, world and merge-method validation) on every invocation, dry runs
included; the merge methods and the channel simulation are declared there but only executed inside jobs. Importing
torch and scipy.signal eagerly cost that parse step several seconds. `lazy_import("torch")` returns the module object
at once and executes it on first attribute access (importlib.util.LazyLoader), so code written against `torch.…`
keeps working unchanged, while a module-level default such as `torch.float32` would defeat it (use None instead).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """The module `name`, executed on first attribute access (at once if it is already imported)."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent:
        lazy_import(parent)  # a submodule's spec needs its package's __path__ (executes the package lazily too)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
