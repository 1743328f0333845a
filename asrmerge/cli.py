"""The `asrmerge` command line: the data, fine-tuning, task-vector, merge, λ-selection, decoding, scoring, export and
model-import stages, usable without Snakemake.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its subcommand(s) and sets
`func` on the parser to a callable taking the parsed namespace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = [
    "asrmerge.stages_cli",
    "asrmerge.merging.cli",
    "asrmerge.models.cli",
    "asrmerge.data.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asrmerge", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError) as err:
        # Input errors: one clear line, no traceback.
        print(f"asrmerge {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
