"""Sub-commands on a finished run's files: table, figure, report-check.

Each takes the run's config file (default config.yaml, as the workflow) and reads and writes the files the table and
figure rules would (asrmerge.workflow.experiment), through the same functions as the rule scripts.
"""

from __future__ import annotations

import argparse
import sys

from asrmerge.guard import declare_paths
from asrmerge.workflow.experiment import Experiment
from asrmerge.workflow.commands import configfile_argument


def _experiment(args: argparse.Namespace) -> Experiment:
    return Experiment.load(args.configfile)


def _table(args: argparse.Namespace) -> int:
    from asrmerge.report.tables import write_run_tables

    experiment = _experiment(args)
    write_run_tables(experiment.score_files(), experiment.selection_files(),
                     {t: experiment.manifest(t) for t in experiment.test_sets}, experiment.roles(), experiment.reference,
                     experiment.table_files(), experiment.metrics())
    for path in experiment.table_files().values():
        print(path)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from asrmerge.report.figures import draw_figure

    experiment = _experiment(args)
    for name in args.names or experiment.figures:
        job, paths = experiment.figure_job(name), experiment.figure_files(name)
        draw_figure(name, list(paths.values()), table=job.inputs.get("table"), branches=job.branches,
                    branch_files=job.branch_files, layer=job.layer)
        print(*paths.values())
    return 0


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
    """Add the table, figure and report-check subcommands."""
    p = subparsers.add_parser(
        "table", help="per-test-set and paper-layout tables of a run (rule table)",
        description="Inputs: the run's scores/*.json, selection/*.json and test-set manifests. Outputs: "
                    "tables/wer.{csv,md,tex,html}, wer_wide.csv and paper.{csv,md,tex,html} under its results folder.",
    )
    configfile_argument(p)
    p.set_defaults(func=_table)

    p = subparsers.add_parser(
        "figure", help="draw a run's figures, PNG and PDF (rule figure)",
        description="Inputs: tables/wer.csv, selection records or merge diagnostics, as each figure needs "
                    "(asrmerge.workflow.figure_plan). Outputs: figures/NAME.{png,pdf} under the run's results folder.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="figures to draw (default: every one the config supports)")
    configfile_argument(p)
    p.set_defaults(func=_figure)

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
