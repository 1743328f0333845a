"""Sub-command on a finished run's files: report-check, which takes the run's config file (default config.yaml, as
the workflow) and reads the tables and figures the rules wrote (asrmerge.workflow.experiment). The table and figure
commands are declared stages (asrmerge.workflow.stages)."""

from __future__ import annotations

import argparse
import sys

from asrmerge.guard import declare_paths
from asrmerge.workflow.experiment import Experiment
from asrmerge.workflow.stage import configfile_argument


def _experiment(args: argparse.Namespace) -> Experiment:
    return Experiment.load(args.configfile)


def _report_check(args: argparse.Namespace) -> int:
    from asrmerge.report.check import check_report

    outcome = check_report(args.report, _experiment(args).report_items(), args.screenshots, args.chromium)
    for item in outcome.rendered:
        print(f"ok  {item}")
    for problem in outcome.problems:
        print(f"BAD {problem}", file=sys.stderr)
    print(f"{len(outcome.rendered)} items rendered, {len(outcome.problems)} problems")
    return 0 if outcome.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the report-check subcommand."""
    p = subparsers.add_parser(
        "report-check", help="open a run's report.html in headless Chromium; check every table and figure renders",
        description="Input: REPORT (from `snakemake --report REPORT`) and the run's tables and figures. Output: one "
                    "line per item; exit status 1 when an item is missing, stale or not rendered. Needs Chromium and "
                    "the `playwright` package.",
    )
    p.add_argument("report")
    configfile_argument(p)
    p.add_argument("--screenshots", default=None, metavar="DIR", help="save a screenshot of every rendered item here")
    p.add_argument("--chromium", default=None, metavar="PATH", help="the browser binary (default: chromium on PATH)")
    declare_paths(p, inputs=["report"], outputs=["screenshots"])
    p.set_defaults(func=_report_check)
