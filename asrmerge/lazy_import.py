"""Deferred imports for modules that the workflow's parse step loads but never runs.

Snakemake imports `asrmerge.workflow.config` (schema, world and merge-method validation) on every invocation, dry runs
included; the merge methods and the channel simulation are declared there but only executed inside jobs. Importing
torch and scipy.signal eagerly cost that parse step several seconds. `lazy_import("torch")` returns a stand-in at once
that imports the module on first attribute access, so code written against `torch.…` keeps working unchanged, while a
module-level default such as `torch.float32` would defeat it (use None instead).

The stand-in is not put into `sys.modules`: a library that looks there for optional modules (torch does, for scipy)
would otherwise execute each deferred one at its own import, costing every job that never uses them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """A module imported on first attribute access; its attributes are then copied in, so later lookups are plain."""

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


def lazy_import(name: str) -> ModuleType:
    """The module `name`, imported on first attribute access (the module itself if it is already imported)."""
    if name in sys.modules:
        return sys.modules[name]
    package = name.partition(".")[0]  # a submodule's spec would import its packages now
    if importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)
    return _Deferred(name)
