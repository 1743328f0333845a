"""Every workflow rule, as the rule files declare it, has an `asrmerge` command that does its work and job records
(log, benchmark) at the path layout.py gives it: the list of rules is read from rules/*.smk, not written here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from asrmerge import layout
from asrmerge.cli import build_parser, rule_commands
from asrmerge.workflow.stage import FromRule, OutputFiles, rule_stages

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
    by_rule = rule_commands()
    assert sorted(set(rules()) - set(by_rule)) == [], "a rule without an asrmerge command (asrmerge.cli.rule_commands)"
    assert sorted(set(by_rule) - set(rules())) == [], "a command names a rule the rule files do not have"
    assert sorted(set(by_rule.values()) - commands) == []


def test_a_declared_stage_rule_runs_the_stage_script_and_names_its_arguments() -> None:
    """The rules of declared stages run scripts/stage.py, which reads each argument by name from the job: a rule
    must name every argument that has no default or that the run's config gives and it may not omit (as an input,
    output, param or wildcard; an input function that it unpacks or splats names its own)."""
    declared = rule_stages()
    for name, body in rules().items():
        runs_stage = '"../scripts/stage.py"' in body
        assert runs_stage == (name in declared), f"rule {name}: scripts/stage.py is the script of declared stages only"
        if not runs_stage or "unpack(" in body or re.search(r"\*\*\w+\(", body):
            continue
        for argument in declared[name].arguments:
            named = re.search(rf"^\s+{argument.name}=", body, re.MULTILINE) or f"{{{argument.name}}}" in body
            marker = argument.marker
            if isinstance(marker, OutputFiles) or marker.rule_may_omit:
                continue  # the job's outputs; derived from the job's config
            if argument.required or isinstance(marker, FromRule) or marker.of is not None:
                assert named, f"rule {name} does not name {argument.name!r}, which stage {declared[name].command} reads"


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


SECTION = re.compile(r"^    (\w+):\n((?:        .*\n|\n)*)", re.MULTILINE)


def test_no_declared_stage_rule_names_an_argument_in_two_sections() -> None:
    """A job finds each argument by its name among its input, output and params: a name in two of them (the files as
    inputs, their mapping as a param) would leave which one the stage gets to the order of a lookup. Every rule of a
    declared stage, every argument (the job refuses it too: tests/test_stage_declarations.py)."""
    declared = rule_stages()
    for name, body in rules().items():
        if name not in declared:
            continue
        names = {section: set(re.findall(r"^        (\w+)=", text, re.MULTILINE))
                 for section, text in SECTION.findall(body) if section in ("input", "output", "params")}
        for argument in declared[name].arguments:
            holders = [section for section, found in names.items() if argument.name in found]
            assert len(holders) <= 1, f"rule {name} names {argument.name!r} in {holders}"


EDGE = re.compile(r"^\s*(\d+) -> (\d+)$", re.MULTILINE)
NODE = re.compile(r'^\s*(\d+)\[label = "(\w+)"', re.MULTILINE)


def rule_graph(config: dict, tmp_path: Path) -> set[tuple[str, str]]:
    """(producer, consumer) rule pairs of a config's DAG, as `snakemake --rulegraph` draws it."""
    path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump({**config, "results": str(tmp_path / "results")}), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "snakemake", "--rulegraph", "--cores", "1", "--snakefile",
                           str(ROOT / "Snakefile"), "--directory", str(ROOT), "--configfile", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    names = dict(NODE.findall(done.stdout))
    return {(names[a], names[b]) for a, b in EDGE.findall(done.stdout) if a != b}


def test_every_rule_ranks_by_the_longest_chain_it_starts(tmp_path: Path) -> None:
    """A rule's `priority:` is the number of rules on the longest chain from it to the final target, so that among
    the jobs ready at once Snakemake starts those that most stages still wait on (highest level first): the last
    merge's selection, decode and table then do not run alone at the end of a run while other cores idle. The
    chains are read from the rule graphs of the demo config, of the demo with a supplied fine-tune and of the demo
    exporting only the best merge, which between them have every rule."""
    demo = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    supplied = {**demo, "finetune": {**demo["finetune"], "checkpoints": {"banking": str(ROOT / "assets" / "foundation")}}}
    best = {**demo, "merge": {**demo["merge"], "export_models": "best"}}
    edges = set().union(*(rule_graph(config, tmp_path) for config in (demo, supplied, best)))
    consumers: dict[str, set[str]] = {}
    for producer, consumer in edges:
        consumers.setdefault(producer, set()).add(consumer)

    def height(rule: str) -> int:
        return max((1 + height(consumer) for consumer in consumers.get(rule, ())), default=0)

    declared = {name: int(m.group(1)) for name, body in rules().items()
                if (m := re.search(r"^    priority: (\d+)$", body, re.MULTILINE))}
    assert sorted(set(rules()) - set(declared)) == [], "a rule without a priority"
    assert {name for pair in edges for name in pair} - {"all"} == set(rules()), "a rule the graphs do not reach"
    assert {name: height(name) for name in declared} == declared
