"""Sub-commands of the workflow's stages: one per declared stage (asrmerge.workflow.stage.add_commands: every rule's
work, from corpus and pretrain to table and figure), and compare-runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from asrmerge.workflow.stage import add_commands


def _compare_runs(args: argparse.Namespace) -> int:
    from asrmerge.workflow.compare import compare_runs

    comparison = compare_runs(args.first, args.second)
    print("\n".join(comparison.report()))
    return 0 if comparison.equal else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the declared stages' subcommands and compare-runs."""
    add_commands(subparsers)

    p = subparsers.add_parser(
        "compare-runs", help="compare two results folders file by file (exit status 1 when they differ)",
        description="Every file but logs/ and benchmarks/; safetensors tensor by tensor and by metadata, the rest byte "
                    "for byte, each folder's own path read as <results>. E.g. the micro config run before and after "
                    "a code change, or a SLURM run against a local one.",
    )
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.set_defaults(func=_compare_runs)
