"""Every workflow rule, as the rule files declare it, has an `asrmerge` command that does its work and job records
(log, benchmark) at the path layout.py gives it: the list of rules is read from rules/*.smk, not written here."""

from __future__ import annotations

import re
from pathlib import Path

from asrmerge import layout
from asrmerge.cli import RULE_COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def rules() -> dict[str, str]:
    """Rule name -> its body, from every rule file the Snakefile includes."""
    snakefile = (ROOT / "Snakefile").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for include in re.findall(r'^include: "(.+)"', snakefile, re.MULTILINE):
        found.update(RULE.findall((ROOT / include).read_text(encoding="utf-8")))
    return found


def test_the_rule_files_are_read() -> None:
    found = rules()
    assert {"corpus_set", "merge", "figure"} <= set(found) and len(found) >= 20
    assert "script:" in found["merge"]


def test_every_rule_has_a_command() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert sorted(set(rules()) - set(RULE_COMMANDS)) == [], "a rule without an asrmerge command (asrmerge.cli.RULE_COMMANDS)"
    assert sorted(set(RULE_COMMANDS) - set(rules())) == [], "RULE_COMMANDS names a rule the rule files do not have"
    assert sorted(set(RULE_COMMANDS.values()) - commands) == []


def test_every_rule_keeps_its_job_records_where_layout_says() -> None:
    found = rules()
    assert set(layout.JOB_RECORDS) == set(found)
    for name, body in found.items():
        assert f'layout.job_log(RESULTS, "{name}")' in body, f"rule {name}: log is not layout.job_log of its own name"
        assert f'layout.job_benchmark(RESULTS, "{name}")' in body, f"rule {name}: benchmark is not its own"
    records = list(layout.JOB_RECORDS.values())
    assert len(set(records)) == len(records), "two rules share one job record"


def test_job_records_fill_like_result_paths() -> None:
    assert layout.job_log("R", "select_lambda") == "R/logs/selection/{method}/{params}.log"
    assert layout.job_benchmark("R", "decode_merged") == "R/benchmarks/hypotheses/merged/{method}/{params}.tsv"
