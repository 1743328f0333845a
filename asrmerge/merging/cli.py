"""Command-line subcommands of the merge engine: export and methods, and the readers of a merge's command-line
values (λ, method parameters) that the merge stage's command uses (task-vector, task-spectra, diagnose and merge are
declared stages: asrmerge.workflow.stages)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from asrmerge.merging.registry import list_methods, resolve_params
from asrmerge.merging.spec import MergeMethod
from asrmerge.guard import declare_paths

#: Largest |λ| a command takes: beyond it θ₀ + λ·τ leaves the range of any trained weights (and 1e39 overflows the
#: float32 weights to inf).
MAX_ABS_LAMBDA = 100.0


def finite_float(text: str) -> float:
    """argparse type of λ: a finite number of at most MAX_ABS_LAMBDA in size (nan, inf or 1e39 would write a model of
    NaNs or infinities)."""
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_ABS_LAMBDA:
        raise argparse.ArgumentTypeError(f"needs a finite number within ±{MAX_ABS_LAMBDA:g}, got {text!r}")
    return value


def parse_params(method: MergeMethod, given: Mapping[str, Any]) -> dict[str, Any]:
    """A method's parameters as given: a value written on the command line (text) is read by its ParamSpec's kind,
    a value from a config as it is; then validated with resolve_params."""
    params: dict[str, Any] = {}
    for key, value in given.items():
        spec = method.params.get(key)
        if spec is None or not isinstance(value, str):
            params[key] = value  # resolve_params reports an unknown key with the known ones
            continue
        try:
            params[key] = spec.parse(value)
        except ValueError:
            raise ValueError(f"method {method.name!r}: parameter {key!r}={value!r} is not a {spec.kind}; allowed: {spec.allowed()}") from None
    return resolve_params(method, params)


def _export(args: argparse.Namespace) -> int:
    from asrmerge.merging.engine import export_merged_model

    export_merged_model(args.base, args.task_vector, args.lam, args.out)
    return 0


def methods_table() -> list[dict[str, Any]]:
    """Registered methods as plain data (name, family, parameters with defaults, λ grid, reference)."""
    return [
        {
            "name": m.name,
            "family": m.family,
            "summary": m.summary,
            "reference": m.reference,
            "matrix_only": m.matrix_only,
            "uses_rng": m.uses_rng,
            "params": {k: {"default": s.default, "kind": s.kind, "allowed": s.allowed(), "doc": s.doc} for k, s in m.params.items()},
            "default_lambdas": list(m.default_lambdas),
        }
        for m in list_methods()
    ]


def _methods(args: argparse.Namespace) -> int:
    table = methods_table()
    if args.json:
        sys.stdout.write(json.dumps(table, indent=1) + "\n")
        return 0
    lines = []
    for row in table:
        grid = row["default_lambdas"]
        lam = f"λ {grid[0]}..{grid[-1]} ({len(grid)})" if len(grid) > 1 else f"λ {grid[0]}"
        lines.append(f"{row['name']}  [{row['family']}{', matrices only' if row['matrix_only'] else ''}]  {lam}")
        lines.append(f"    {row['summary']}")
        lines.append(f"    reference: {row['reference']}")
        for key, spec in row["params"].items():
            lines.append(f"    --param {key}={spec['default']!r}  ({spec['allowed']}) {spec['doc']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the export and methods subcommands."""
    p = subparsers.add_parser("export", help="write θ_base + λ·τ as a transformers model folder")
    p.add_argument("--base", required=True, help="base model folder")
    p.add_argument("--task-vector", required=True, dest="task_vector", help="(merged) task-vector file")
    p.add_argument("--lambda", required=True, type=finite_float, dest="lam", help="scaling coefficient λ")
    p.add_argument("--out", required=True, help="output model folder")
    declare_paths(p, inputs=["base", "task_vector"], folders=["out"])
    p.set_defaults(func=_export)

    p = subparsers.add_parser("methods", help="list merge methods, their parameters, defaults and references")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_methods)
