"""Sub-commands of the workflow's stages: one per declared stage (asrmerge.workflow.stage.add_commands: check-splits,
finetune, import-finetune, task-vector, task-spectra, diagnose, statistics, adamerging-coefficients, select-lambda,
decode, score), pretrain (the base model as a run's config says) and compare-runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from asrmerge.defaults import choices
from asrmerge.guard import declare_paths
from asrmerge.workflow import stages
from asrmerge.workflow.experiment import DEFAULT_CONFIG, Experiment
from asrmerge.workflow.stage import add_commands


def _pretrain(args: argparse.Namespace) -> int:
    from asrmerge import layout

    experiment = Experiment.load(args.configfile)
    settings = experiment.config["base_model"]
    general = experiment.manifests(experiment.general_sets) if settings["source"] == "pretrain" else []
    missing = [path for path in general if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"general set manifest {missing[0]} does not exist: make it first "
                                f"(snakemake {missing[0]} --configfile {args.configfile})")
    out = args.out or experiment.result(layout.BASE_MODEL)
    stages.base_model(settings, general, out, experiment.config["seed"], args.device or experiment.config["device"],
                      experiment.generation)
    print(out)
    return 0


def _compare_runs(args: argparse.Namespace) -> int:
    from asrmerge.workflow.compare import compare_runs

    comparison = compare_runs(args.first, args.second)
    print("\n".join(comparison.report()))
    return 0 if comparison.equal else 1


def configfile_argument(parser: argparse.ArgumentParser) -> None:
    """--configfile: the run's config, read as the workflow reads it (asrmerge.workflow.experiment)."""
    parser.add_argument("--configfile", default=DEFAULT_CONFIG,
                        help=f"the run's config (default {DEFAULT_CONFIG}); its `results` folder is read and written")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the declared stages' subcommands, pretrain and compare-runs."""
    add_commands(subparsers)

    p = subparsers.add_parser(
        "pretrain", help="make a run's base model as config `base_model` says (rule base_model)",
        description="Inputs: the config's `base_model` settings and, to pretrain, its general sets' manifests (train "
                    "split) under the results folder. Output: models/base under the results folder, or --out. "
                    "Resumes from the output's resume state when it matches.",
    )
    configfile_argument(p)
    p.add_argument("--out", default=None, help="model folder to write (default: the run's models/base)")
    p.add_argument("--device", default=None, choices=choices("device"), help="default: config `device`")
    declare_paths(p, folders=["out"])
    p.set_defaults(func=_pretrain)

    p = subparsers.add_parser(
        "compare-runs", help="compare two results folders file by file (exit status 1 when they differ)",
        description="Every file but logs/ and benchmarks/; safetensors tensor by tensor and by metadata, the rest byte "
                    "for byte, each folder's own path read as <results>. E.g. the micro config run before and after "
                    "a code change, or a SLURM run against a local one.",
    )
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.set_defaults(func=_compare_runs)
