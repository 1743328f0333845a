"""The documentation: the README is an entrance (at most README_LINES lines), the site builds with --strict, the
generated reference pages match the code, a run's results page is written from its files, and every shell and
config block of the README and the site does what its marker comment says (docs/development.md, "The
documentation")."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from asrmerge import reference
from asrmerge.cli import main
from asrmerge.report import results_page

ROOT = Path(__file__).resolve().parents[1]
README_LINES = 250
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Block languages that must carry a marker, and the modes each may have.
MODES = {"bash": ("run", "dry-run", "skip"), "yaml": ("config", "skip")}
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- docs-test: ([\w-]+)(?: (.*?))? -->$")
#: Commands a dry-run block may hold, and where its -n goes (after the first word).
DRY_RUNNABLE = ("make", ".venv/bin/snakemake")
QUIET_MKDOCS = {"NO_MKDOCS_2_WARNING": "1"}  # the theme's notice about its successor, printed on every build


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence
    language: str
    mode: str | None
    detail: str  # the reason of a skip or a dry run, "complete" for a whole config
    text: str

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The block's command lines, continuation lines joined, comment lines dropped."""
        joined = self.text.replace("\\\n", " ")
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def blocks(document: Path) -> list[Block]:
    found = []
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        found.append(Block(document, index + 1, fence.group(1), marker.group(1) if marker else None,
                           (marker.group(2) or "") if marker else "", "\n".join(lines[index + 1:end])))
        index = end + 1
    return found


BLOCKS = [block for document in DOCUMENTS for block in blocks(document) if block.language in MODES]


def by_mode(*modes: str) -> list:
    return [pytest.param(block, id=block.name) for block in BLOCKS if block.mode in modes]


def test_the_readme_is_an_entrance():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; the reference material goes into docs/"


def test_every_block_says_how_it_is_tested():
    unmarked = [f"{b.name} ({b.language})" for b in BLOCKS if b.mode not in MODES[b.language]]
    assert not unmarked, ("blocks without a valid <!-- docs-test: MODE --> comment on the line before: "
                          + ", ".join(unmarked))
    unexplained = [b.name for b in BLOCKS if b.mode in ("skip", "dry-run") and not b.detail.strip("() ")]
    assert not unexplained, "a skipped or dry-run block says why: " + ", ".join(unexplained)


@pytest.mark.parametrize("block", by_mode("run"))
def test_a_runnable_block_runs(block: Block):
    for command in block.commands():
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.name}: `{command}` exited {done.returncode}:\n{done.stderr[-2000:]}"


def dry_run(command: str) -> str:
    """The command with -n after its program: make prints what it would run, snakemake plans the jobs."""
    words = command.split(maxsplit=1)
    assert words[0] in DRY_RUNNABLE, f"`{command}`: a dry-run block holds only {' and '.join(DRY_RUNNABLE)} commands"
    return " ".join([words[0], "-n", *words[1:]])


@pytest.mark.parametrize("block", by_mode("dry-run"))
def test_a_long_block_plans(block: Block):
    for command in block.commands():
        done = subprocess.run(["bash", "-c", dry_run(command)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (f"{block.name}: `{dry_run(command)}` exited {done.returncode}:\n"
                                      f"{done.stdout[-1500:]}\n{done.stderr[-1500:]}")


@pytest.mark.parametrize("block", by_mode("config"))
def test_a_config_block_is_a_valid_config(block: Block):
    """Every key and value checked as for a run (its world expanded, the schema, and for a whole config its roles,
    merge entries and keys that take effect); the files it names are the reader's, so their checks are left out."""
    from asrmerge.workflow.config import (
        check_effective_keys, check_roles, expand_world, merge_branches, validate_schema,
    )

    config = yaml.safe_load(block.text)
    given = copy.deepcopy(config)
    expand_world(config)
    validate_schema(config)
    if block.detail == "complete":
        check_roles(config)
        merge_branches(config)
        check_effective_keys(given, config)


def test_a_wrong_block_is_caught(tmp_path):
    """The checks above are not vacuous: an unknown key and an unmarked block are found."""
    from asrmerge.workflow.config import ConfigError, validate_schema

    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\nmake demo\n```\n\n"
                    "<!-- docs-test: config -->\n```yaml\nmerge: {methds: []}\n```\n")
    found = blocks(page)
    assert [b.mode for b in found] == [None, "config"]
    with pytest.raises(ConfigError, match="methds"):
        validate_schema(yaml.safe_load(found[1].text))
    assert dry_run("make demo  # all") == "make -n demo  # all"


def test_every_experiment_is_described():
    """docs/experiments.md names every config of experiments/ (a name or a glob), complete or overlay."""
    import fnmatch

    named = re.findall(r"`(experiments/[^`]+\.yaml)`", (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8"))
    missing = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "experiments").glob("*.yaml"))
               if not any(fnmatch.fnmatch(path.relative_to(ROOT).as_posix(), pattern) for pattern in named)]
    assert not missing, f"docs/experiments.md does not describe {', '.join(missing)}"


def test_the_reference_pages_match_the_code():
    assert main(["docs", "--check", "--root", str(ROOT)]) == 0, "run `asrmerge docs` and commit docs/reference/"


def test_a_stale_reference_page_is_named(tmp_path, capsys):
    written = reference.write_pages(ROOT, tmp_path)
    assert len(written) == len(reference.pages(ROOT))
    stale = Path(written[0])
    stale.write_text(stale.read_text(encoding="utf-8").replace("|", "!", 1), encoding="utf-8")
    assert reference.stale_pages(ROOT, tmp_path) == [str(stale)]


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **QUIET_MKDOCS})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()


def test_the_results_page_counts_what_the_run_measured(tmp_path):
    """Jobs, job time, the span from the first start to the last end and the stages, from two benchmark files."""
    results = tmp_path / "run"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "paper.md").write_text("WER (%)\n\n| System | EP ID |\n|---|---|\n| Zero-shot | 50.00 |\n")
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    measured = [("models/finetuned/news.tsv", 100.0, 1_000_000), ("tables/wer.tsv", 50.0, 1_000_300)]
    for relative, seconds, end in measured:
        path = results / "benchmarks" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:01:40\t512.0\t0\t0\t0\t0\t0\t90\t{seconds}\n")
        os.utime(path, (end, end))
    jobs = results_page.read_jobs(results)
    assert [j.stage for j in jobs] == ["models", "tables"]
    assert results_page.span_seconds(jobs) == 400.0  # 999,900 (first start) to 1,000,300 (last end)
    page = tmp_path / "page.md"
    assert main(["results-page", str(results), "--page", str(page), "--figures", str(tmp_path / "figures"),
                 "--conditions", "alone"]) == 0
    text = page.read_text()
    assert "- 2 jobs" in text and "6.7 min from the first job's start" in text and "2.5 min of job time" in text
    assert "| `models/` | 1 | 1.7 | 100.0 | 512 |" in text and "| Zero-shot | 50.00 |" in text
    assert "conditions: alone" in text
    # the whole make demo's time, from the report /usr/bin/time -v wrote at the end of its log
    make_log = tmp_path / "make.log"
    make_log.write_text("...the run's output...\n\tCommand being timed: \"make demo\"\n\tUser time (seconds): 1300.5\n"
                        "\tSystem time (seconds): 59.5\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 13:14.49\n"
                        "\tExit status: 0\n")
    assert results_page.time_report(make_log) == {"log": str(make_log), "command": "make demo", "wall_seconds": 794.5,
                                                  "cpu_seconds": 1360.0, "exit_status": 0}
    assert main(["results-page", str(results), "--page", str(page), "--figures", str(tmp_path / "figures"),
                 "--make-log", str(make_log), "--conditions", "alone"]) == 0
    assert "the whole `make demo`, its set-up included, 13.2 min" in page.read_text()
    with pytest.raises(ValueError, match="no report of /usr/bin/time -v"):
        results_page.time_report(page)


def test_the_demo_time_target_applies_only_to_a_demo_run():
    """W8's time target is `make demo`'s: a page of another run (make whisper-base) leaves it out, and names the
    command it timed."""
    def report(command: str) -> dict:
        return {"command": command, "wall_seconds": 2528.9, "log": "make.log", "exit_status": 0}

    assert [results_page.is_make_demo(report(c)) for c in ("make demo", "/usr/bin/make demo CORES=2", "make whisper-base",
                                                           "make demo whisper-base", "snakemake demo", "")] == [
        True, True, False, False, False, False]
    assert not results_page.is_make_demo(None)
    assert results_page.make_targets(report("make CORES=2 whisper-base")) == ["whisper-base"]
    assert results_page.make_targets(report("snakemake --cores 2")) is None
    assert "the whole `make whisper-base`, its set-up included, 42.1 min" in results_page.whole_command(
        report("make whisper-base"))
    assert "--demo-seconds" not in results_page.world_targets_command(Path("results/whisper-base"), None)
    command = results_page.world_targets_command(Path("results/demo"), 1026.4)
    assert command[-2:] == ["--demo-seconds", "1026"]


@pytest.mark.slow
def test_the_results_page_is_written_from_a_run(micro_workflow, tmp_path):
    _, results, _ = micro_workflow
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{results_page.README_START}\nthe previous table\n{results_page.README_END}\n\nend\n")
    page, figures = tmp_path / "docs" / "measured" / "micro.md", tmp_path / "docs" / "figures" / "micro"
    assert main(["results-page", str(results), "--page", str(page), "--figures", str(figures), "--readme", str(readme),
                 "--conditions", "in the test suite"]) == 0
    text, table = page.read_text(), (results / "tables" / "paper.md").read_text().strip()
    jobs = list((results / "benchmarks").rglob("*.tsv"))
    assert table in text and f"- {len(jobs)} jobs" in text and "in the test suite" in text
    assert shlex.split(text.splitlines()[0].split("`")[1])[:3] == ["asrmerge", "results-page", str(results)]
    for png in (results / "figures").glob("*.png"):
        assert (figures / png.name).read_bytes() == png.read_bytes()
        assert f"](../figures/micro/{png.name})" in text
    new_readme = readme.read_text()
    assert table in new_readme and "the previous table" not in new_readme and new_readme.endswith("\n\nend\n")

    readme.write_text("# no markers\n")
    assert main(["results-page", str(results), "--page", str(page), "--figures", str(figures), "--readme", str(readme),
                 "--conditions", "x"]) == 2
