"""The merge-method registry: every method the method modules declare (asrmerge.merging.spec), looked up by name.

The registry imports the method modules, never the other way round; importing them stays cheap (torch loads on a
method's first call, asrmerge.lazy_import), so the workflow's parse step reads the registry freely.
"""

from __future__ import annotations

from types import FunctionType, ModuleType
from typing import Any, Mapping

from asrmerge.merging.methods import beyond, data_aware, parameter_space, subspace, task_space
from asrmerge.merging.spec import FAMILIES, MergeMethod

#: The modules whose declared functions are the methods; a new family module is added here.
METHOD_MODULES: tuple[ModuleType, ...] = (parameter_space, task_space, subspace, data_aware, beyond)


def collect(modules: tuple[ModuleType, ...]) -> dict[str, MergeMethod]:
    """The MergeMethod of every function declared in `modules` (asrmerge.merging.spec.declare), by name; a function
    imported from another module is counted where it is defined, and two methods of one name are an error."""
    found: dict[str, MergeMethod] = {}
    for module in modules:
        for value in vars(module).values():
            if type(value) is not FunctionType:  # type(), not isinstance: a lazy module stays unloaded
                continue
            method = getattr(value, "merge_method", None)
            if not isinstance(method, MergeMethod) or value.__module__ != module.__name__:
                continue
            if method.name in found:
                raise ValueError(f"merge method {method.name!r} is declared twice ({found[method.name].fn.__module__}, "
                                 f"{module.__name__})")
            found[method.name] = method
    return found


REGISTRY: dict[str, MergeMethod] = collect(METHOD_MODULES)


def get_method(name: str) -> MergeMethod:
    """Look a method up by name; unknown names raise ValueError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def resolve_params(method: MergeMethod | str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate `params` against the method's ParamSpecs and fill in defaults.

    Raises ValueError naming the method, the key, the value and the allowed values for an unknown key, a value of the
    wrong kind or a value out of range.
    """
    if isinstance(method, str):
        method = get_method(method)
    given = dict(params or {})
    unknown = sorted(set(given) - set(method.params))
    if unknown:
        key = unknown[0]
        known = ", ".join(sorted(method.params)) or "(none)"
        raise ValueError(f"method {method.name!r}: unknown parameter {key!r}={given[key]!r}; known parameters: {known}")
    resolved: dict[str, Any] = {}
    for key, spec in method.params.items():
        raw = given.get(key, spec.default)
        try:
            value = spec.coerce(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"method {method.name!r}: parameter {key!r}={raw!r} is invalid ({err}); allowed: {spec.allowed()}"
            ) from None
        if not spec.in_range(value):
            raise ValueError(f"method {method.name!r}: parameter {key!r}={raw!r} is out of range; allowed: {spec.allowed()}")
        resolved[key] = value
    if method.check is not None:
        try:
            method.check(resolved)
        except ValueError as err:
            raise ValueError(f"method {method.name!r}: {err}") from None
    return resolved


def list_methods() -> list[MergeMethod]:
    """All registered methods, sorted by family then name."""
    order = {family: i for i, family in enumerate(FAMILIES)}
    return sorted(REGISTRY.values(), key=lambda m: (order[m.family], m.name))
