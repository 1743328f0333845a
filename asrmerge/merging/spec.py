"""How a merge method declares itself: typed parameters, the method record, and the `declare` decorator.

A method module imports only this module; asrmerge.merging.registry imports the method modules and collects what
they declared (one direction, no circle).

Every merge method is a pure per-tensor function

    fn(task_vectors: Tensor (T, *shape), base: Tensor (*shape), *, generator=None, **params) -> Tensor (*shape)

returning the merged task vector τ, so that every method composes the same way: θ = θ₀ + λ·τ.
`declare` records it together with its typed parameters, family and λ grid.

Method contract (tests/test_merge_methods.py checks it on every declared method):
- inputs are read-only: a method never writes into `task_vectors` or `base` (the executor reuses their buffers);
- the result is a tensor of `base`'s shape on the inputs' device, finite for finite inputs; it may be a view of an
  input (the executor copies such a result before it reuses the buffer);
- randomness only from `generator` (methods declared with uses_rng=True; the executor seeds one per tensor);
- no threads, no I/O, no global state: methods declared with uses_svd=True receive `svd_dtype` (working precision
  of their SVDs) and `map_tasks`, the map to run their independent per-task steps through, which the executor
  chooses (asrmerge.merging.runtime); the result must not depend on it;
- data-aware methods (declared with `statistics`, one of STATISTICS_KINDS) receive `statistics`: the tasks'
  statistics of this tensor stacked (T, ...) (per-task files stacked, or the (T,) coefficients of a joint file), or
  None where there are none for it (the method then falls back as its reference does, e.g. to the mean of τ_t).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from asrmerge import layout

if TYPE_CHECKING:  # the declarations are read at workflow parse time, which never runs a method (asrmerge.lazy_import)
    import torch

FAMILIES = ("parameter", "task_vector", "subspace", "data_aware")
#: What data-aware methods read, by kind -> whether each task has a file of its own: the Gram matrix XᵀX of each linear
#: layer's inputs (keyed by its weight's name, shaped (in, in)) and the diagonal Fisher information of each parameter,
#: per task (asrmerge.training.statistics); AdaMerging's learned coefficients, one (T,) vector per tensor in one file
#: (asrmerge.training.adamerging).
STATISTICS_KINDS: dict[str, bool] = {"gram": True, "fisher": True, "coefficients": False}
#: The kinds computed per task by the workflow's rule `statistics`.
PER_TASK_STATISTICS = tuple(kind for kind, per_task in STATISTICS_KINDS.items() if per_task)
#: The "kind" metadata of a statistics file; its "statistics" metadata is one of STATISTICS_KINDS.
STATISTICS_FILE_KIND = layout.STATISTICS_KIND


def statistics_shape(kind: str, weight_shape: tuple[int, ...], num_tasks: int) -> tuple[int, ...] | None:
    """The shape of one file's `kind` statistics of a tensor shaped `weight_shape` (None: that kind has none for it)."""
    if kind == "gram":
        return (weight_shape[1], weight_shape[1]) if len(weight_shape) == 2 else None
    if kind == "coefficients":
        return (num_tasks,)
    return tuple(weight_shape)
KINDS = {"float": float, "int": int, "str": str, "bool": bool}


def _grid(stop_tenths: int) -> tuple[float, ...]:
    return tuple(round(0.1 * i, 10) for i in range(1, stop_tenths + 1))


#: λ grids scanned on validation data (docs/methods.md, "Scaling and selection").
TASK_VECTOR_LAMBDAS: tuple[float, ...] = _grid(10)  # 0.1 .. 1.0
SUBSPACE_LAMBDAS: tuple[float, ...] = _grid(30)  # 0.1 .. 3.0 (official TSV/Iso repos: linspace(0, 3, 31)[1:])
PARAMETER_LAMBDAS: tuple[float, ...] = (1.0,)  # θ = θ₀ + 1·(θ_merged − θ₀) = θ_merged


@dataclass(frozen=True)
class ParamSpec:
    """Typed, validated hyper-parameter of a merge method.

    `minimum`/`maximum` bound numeric values; `min_inclusive`/`max_inclusive` say whether the bound itself is allowed
    (density ∈ (0, 1] is ParamSpec(0.2, "float", minimum=0, maximum=1, min_inclusive=False)).
    """

    default: Any
    kind: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""
    min_inclusive: bool = True
    max_inclusive: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ParamSpec kind must be one of {sorted(KINDS)}, got {self.kind!r}")

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.minimum is None and self.maximum is None:
            return f"any {self.kind}"
        lo = "-inf" if self.minimum is None else repr(self.minimum)
        hi = "inf" if self.maximum is None else repr(self.maximum)
        left = "[" if (self.min_inclusive and self.minimum is not None) else "("
        right = "]" if (self.max_inclusive and self.maximum is not None) else ")"
        return f"{self.kind} in {left}{lo}, {hi}{right}"

    def coerce(self, value: Any) -> Any:
        """Return `value` converted to this kind, or raise TypeError/ValueError (message without context)."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError("expected a bool")
        if self.kind == "str":
            if isinstance(value, str):
                return value
            raise TypeError("expected a string")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a {self.kind}")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise TypeError("expected an int")
            return int(value)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    def in_range(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.minimum is not None and (value < self.minimum or (value == self.minimum and not self.min_inclusive)):
            return False
        if self.maximum is not None and (value > self.maximum or (value == self.maximum and not self.max_inclusive)):
            return False
        return True

    def parse(self, text: str) -> Any:
        """Parse a command-line string (`k=v` right-hand side) according to `kind`."""
        if self.kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"cannot parse {text!r} as bool")
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        return text


@dataclass(frozen=True)
class TensorStream:
    """Re-iterable view of the whole model's task vectors for model-wide pre-passes.

    Each call streams the model once as (name, stacked τ float32 on the merge device): (T, *shape) per tensor, or
    (T, n) slices of a large tensor's flattened entries, in order. A yielded stack is only valid until the next one
    is requested (the engine reuses its buffer). `numel` is the number of entries per task (Σ over tensors),
    `num_tasks` is T. `statistics`, for data-aware methods, streams (name, stacked statistics (T, ...)) of every
    tensor the tasks have statistics for, in the same way.
    """

    open: Callable[[], Iterator[tuple[str, torch.Tensor]]]
    numel: int
    num_tasks: int
    statistics: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None

    def __call__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return self.open()

    def values(self, transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Callable[[], Iterator[torch.Tensor]]:
        """Zero-argument callable yielding transform(τ stack) flattened to (T, n), for `streaming_order_statistics`."""

        def chunks() -> Iterator[torch.Tensor]:
            for _, stack in self.open():
                yield transform(stack).reshape(self.num_tasks, -1)

        return chunks


#: Model-wide pre-pass: (stream, resolved params) -> extra keyword arguments passed to fn for every tensor.
GlobalStatsFn = Callable[[TensorStream, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MergeMethod:
    """A declared merge method.

    Attributes:
        name: registry key.
        fn: the pure per-tensor function (see module docstring).
        family: "parameter" | "task_vector" | "subspace" | "data_aware".
        params: hyper-parameters with defaults and ranges.
        matrix_only: applied to 2-D weight matrices only; the engine gives every other tensor (and every tensor
            matching the SVD exclusion patterns) the mean of τ_t.
        uses_rng: fn draws from its `generator` argument (the engine seeds one per tensor).
        uses_svd: fn accepts `svd_dtype` (working precision of its SVDs) and `map_tasks` (module docstring).
        default_lambdas: λ grid for validation sweeps.
        reference: the implementation whose numbers this method reproduces.
        statistics: what a data-aware method needs per task and tensor (one of STATISTICS_KINDS), or None.
        global_stats: optional model-wide pre-pass (e.g. TIES with scope="global").
        check: optional cross-parameter validation (raises ValueError).
        elementwise: entry i of the result depends only on entry i of every τ_t and of the base (given the
            pre-pass results), so the engine may merge a tensor in slices (bool, or a predicate of the resolved
            parameters). Random methods are never sliced: their draws are one block per tensor.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    family: str
    params: Mapping[str, ParamSpec]
    matrix_only: bool = False
    uses_rng: bool = False
    uses_svd: bool = False
    default_lambdas: tuple[float, ...] = TASK_VECTOR_LAMBDAS
    reference: str = ""
    statistics: str | None = None
    global_stats: GlobalStatsFn | None = None
    check: Callable[[Mapping[str, Any]], None] | None = field(default=None)
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False

    def is_elementwise(self, params: Mapping[str, Any]) -> bool:
        """Whether the engine may merge tensors in slices with these resolved parameters."""
        if self.uses_rng or self.matrix_only:
            return False
        return bool(self.elementwise(params) if callable(self.elementwise) else self.elementwise)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"method {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.statistics is not None and self.statistics not in STATISTICS_KINDS:
            raise ValueError(f"method {self.name!r}: statistics must be one of {list(STATISTICS_KINDS)}, got {self.statistics!r}")
        for key, spec in self.params.items():
            if not spec.in_range(spec.coerce(spec.default)):
                raise ValueError(f"method {self.name!r}: default of {key!r} ({spec.default!r}) is not {spec.allowed()}")

    @property
    def summary(self) -> str:
        doc = (self.fn.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


_FAMILY_LAMBDAS = {
    "parameter": PARAMETER_LAMBDAS,
    "task_vector": TASK_VECTOR_LAMBDAS,
    "subspace": SUBSPACE_LAMBDAS,
    "data_aware": TASK_VECTOR_LAMBDAS,
}


def _check_signature(name: str, fn: Callable[..., Any], params: Mapping[str, ParamSpec]) -> None:
    """Every hyperparameter is a keyword of `fn`, and a default written in its signature is the ParamSpec's.

    The ParamSpec is the one declaration that the config, the CLI and the engine read; a signature default is only
    what a direct call gets, and must not drift from it.
    """
    signature = inspect.signature(fn)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    for key, spec in params.items():
        parameter = signature.parameters.get(key)
        if parameter is None:
            if not takes_any:
                raise ValueError(f"merge method {name!r}: parameter {key!r} is not a keyword of {fn.__name__}()")
        elif parameter.default is not inspect.Parameter.empty and parameter.default != spec.default:
            raise ValueError(
                f"merge method {name!r}: {fn.__name__}() defaults {key}={parameter.default!r}, "
                f"its ParamSpec {spec.default!r}"
            )


def declare(
    name: str,
    *,
    family: str,
    params: Mapping[str, ParamSpec] | None = None,
    matrix_only: bool = False,
    uses_rng: bool = False,
    uses_svd: bool = False,
    default_lambdas: tuple[float, ...] | None = None,
    reference: str = "",
    statistics: str | None = None,
    global_stats: GlobalStatsFn | None = None,
    check: Callable[[Mapping[str, Any]], None] | None = None,
    elementwise: bool | Callable[[Mapping[str, Any]], bool] = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: attach the MergeMethod record of `fn` as `fn.merge_method` (asrmerge.merging.registry collects it)."""

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        _check_signature(name, fn, params or {})
        fn.merge_method = MergeMethod(  # type: ignore[attr-defined]
            name=name,
            fn=fn,
            family=family,
            params=dict(params or {}),
            matrix_only=matrix_only,
            uses_rng=uses_rng,
            uses_svd=uses_svd,
            default_lambdas=default_lambdas if default_lambdas is not None else _FAMILY_LAMBDAS[family],
            reference=reference,
            statistics=statistics,
            global_stats=global_stats,
            check=check,
            elementwise=elementwise,
        )
        return fn

    return decorator
