"""Command-line subcommands of the merge engine: merge, export, methods (task-vector, task-spectra and diagnose
are declared stages: asrmerge.workflow.stages)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Sequence

import torch

from asrmerge.defaults import default
from asrmerge.merging.engine import DEFAULT_SVD_EXCLUDE, export_merged_model, merge
from asrmerge.merging.registry import get_method, list_methods, resolve_params
from asrmerge.merging.spec import MergeMethod
from asrmerge.guard import declare_paths

SVD_DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


def parse_params(method: MergeMethod, items: Sequence[str]) -> dict[str, Any]:
    """Parse `k=v` strings against the method's ParamSpecs (kind-aware), then validate with resolve_params."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {item!r}")
        if key in params:
            raise ValueError(f"--param {key!r} given twice")
        spec = method.params.get(key)
        if spec is None:
            params[key] = text  # resolve_params reports the unknown key with the known ones
            continue
        try:
            params[key] = spec.parse(text)
        except ValueError:
            raise ValueError(f"method {method.name!r}: parameter {key!r}={text!r} is not a {spec.kind}; allowed: {spec.allowed()}") from None
    return resolve_params(method, params)


def _merge(args: argparse.Namespace) -> int:
    if args.recipe is not None:
        return _rebuild(args)
    missing = [flag for flag, value in (("--method", args.method), ("--base", args.base),
                                        ("--finetuned or --task-vectors", args.finetuned or args.task_vectors))
               if not value]
    if missing:
        raise ValueError(f"give {missing[0]} (or --recipe of an exported merge)")
    method = get_method(args.method)
    params = parse_params(method, args.param)
    if args.out is None and args.out_model is None:
        raise ValueError("give --out (merged task vector) and/or --out-model (merged model folder)")
    if args.lam is not None and args.out_model is None:
        raise ValueError("--lambda scales the merged model: it needs --out-model")
    merge(
        args.base,
        task_vectors=args.task_vectors,
        finetuned=args.finetuned,
        method=method.name,
        params=params,
        out_path=args.out,
        out_model=args.out_model,
        lam=1.0 if args.lam is None else args.lam,
        seed=args.seed,
        device=args.device,
        svd_dtype=SVD_DTYPES[args.svd_dtype],
        exclude_from_svd=DEFAULT_SVD_EXCLUDE if args.exclude_from_svd is None else tuple(args.exclude_from_svd),
        diagnostics_path=args.diagnostics,
        statistics=args.statistics,
    )
    return 0


#: `asrmerge merge` options that a recipe fixes (given with --recipe, they would be ignored).
RECIPE_FIXES = ("method", "base", "finetuned", "task_vectors", "out", "lam", "param", "statistics", "diagnostics",
                "exclude_from_svd")
#: Those with a default: given another value, they would be ignored too.
RECIPE_FIXES_WITH_DEFAULT = {"seed": "seed", "device": "merge.device", "svd_dtype": "merge.svd_dtype"}


def _rebuild(args: argparse.Namespace) -> int:
    """An exported merge again from its recipe (asrmerge.merging.recipe)."""
    from asrmerge.merging.recipe import read_recipe, rebuild

    given = [name for name in RECIPE_FIXES if getattr(args, name) not in (None, [])]
    given += [name for name, key in RECIPE_FIXES_WITH_DEFAULT.items() if getattr(args, name) != default(key)]
    if given:
        raise ValueError(f"--recipe fixes --{given[0].replace('_', '-')}: give only --recipe and --out-model")
    if args.out_model is None:
        raise ValueError("--recipe rebuilds a model folder: give --out-model")
    rebuild(read_recipe(args.recipe), args.out_model)
    return 0



def _export(args: argparse.Namespace) -> int:
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
    """Add the merge, export and methods subcommands."""
    p = subparsers.add_parser("merge", help="merge task vectors with a registered method (writes the merged τ and/or model)")
    p.add_argument("--method", help="registered method name (see `asrmerge methods`)")
    p.add_argument("--base", help="base model folder or .safetensors file")
    p.add_argument("--recipe", help="merge_recipe.json of an exported merge: rebuild it into --out-model (the same "
                                    "weights; every input checked against its SHA-256 first)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--finetuned", nargs="+", help="fine-tuned model folders (τ computed on the fly)")
    src.add_argument("--task-vectors", nargs="+", dest="task_vectors", help="task-vector files from `asrmerge task-vector`")
    p.add_argument("--out", help="output .safetensors file with the merged task vector τ")
    p.add_argument("--out-model", dest="out_model",
                   help="output model folder θ_base + λ·τ (base dtypes and config files), written in the same pass")
    p.add_argument("--lambda", type=finite_float, dest="lam", default=None, help="λ for --out-model (default 1.0)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method parameter (repeatable)")
    p.add_argument("--seed", type=int, default=default("seed"), help="seed of the per-tensor generators (random methods)")
    p.add_argument("--device", default=default("merge.device"), help="torch device for the per-tensor computation, e.g. cpu or cuda")
    p.add_argument("--svd-dtype", choices=sorted(SVD_DTYPES), default=default("merge.svd_dtype"), help="working precision of SVDs")
    p.add_argument("--exclude-from-svd", nargs="*", default=None, metavar="REGEX",
                   help=f"tensors kept out of subspace methods' SVD (default: {' '.join(DEFAULT_SVD_EXCLUDE)})")
    p.add_argument("--diagnostics", default=None, help="also write per-tensor diagnostics JSON here")
    p.add_argument("--statistics", nargs="+", default=None, metavar="FILE",
                   help="data-aware methods (regmean, fisher): each task's statistics file (`asrmerge statistics`), "
                        "in the order of the task vectors")
    declare_paths(p, inputs=["base", "finetuned", "task_vectors", "statistics", "recipe"], outputs=["out", "diagnostics"],
                  folders=["out_model"])
    p.set_defaults(func=_merge)

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
