"""The `asrmerge` command line: every stage of the workflow (one command per rule: `rule_commands`), report-check,
the export and model-import tools and compare-runs, usable without Snakemake.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its subcommand(s) and sets
`func` on the parser to a callable taking the parsed namespace.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from asrmerge.guard import check_command, end_command

def rule_commands() -> dict[str, str]:
    """The command that does each workflow rule's work, by rule: every rule's job is a declared stage
    (asrmerge.workflow.stage; tests/test_rules.py derives the rules from rules/*.smk)."""
    from asrmerge.workflow.stage import rule_stages

    return {rule: declared.command for rule, declared in rule_stages().items()}


COMMAND_MODULES = [
    "asrmerge.workflow.commands",
    "asrmerge.merging.cli",
    "asrmerge.models.cli",
    "asrmerge.data.cli",
    "asrmerge.report.cli",
    "asrmerge.report.results_page",
    "asrmerge.reference",
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
    # This package's progress at INFO; other libraries (fontTools, matplotlib, ...) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asrmerge").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        check_command(args)  # the output guard, before any work
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError) as err:
        # Input errors: one clear line, no traceback.
        print(f"asrmerge {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        end_command()


if __name__ == "__main__":
    sys.exit(main())
