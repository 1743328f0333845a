"""A run's results as a documentation page and as the README's table, written from the run's own files.

`asrmerge results-page RESULTS` reads the run's paper-layout table (tables/paper.md, with its note), its benchmark
files (one per job: wall clock, CPU time, peak memory) and its figures, and writes
- a page for the documentation site (default docs/measured/<folder name>.md): the table, the run's size and time by
  stage, the machine, the figures (copied beside the page's other figures) and, with --targets, what
  benchmarks/world_targets.py prints about the run;
- with --readme, the same table between the README's two marker comments (README_START, README_END).
So no number of a run is typed into the docs; rerunning the command after a run brings them up to date.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from asrmerge import layout
from asrmerge.atomic import write_text
from asrmerge.guard import declare_paths
from asrmerge.workflow import job_server

PAPER_TABLE = layout.TABLE_FILES["paper_markdown"]
README_START = "<!-- results-table: start (written by `asrmerge results-page`; do not edit) -->"
README_END = "<!-- results-table: end -->"
#: Prints targets W1–W8 and the findings of a run (run from the repository root).
WORLD_TARGETS = Path("benchmarks") / "world_targets.py"


@dataclass(frozen=True)
class Job:
    """One job's Snakemake benchmark file: the stage is its first folder under benchmarks/."""

    path: str
    stage: str
    seconds: float
    cpu_seconds: float
    peak_mib: float
    finished: float  # the file's modification time: the job's end
    forked: bool = False  # forked from the run's job server (its CPU time and memory are the fork's added)


def read_jobs(results: Path) -> list[Job]:
    """Every benchmark file of the run (a job run several times keeps its last measurement). A job forked from the
    run's job server worked outside the process its benchmark measured: its log's record of the fork's CPU time and
    peak memory (asrmerge.workflow.job_server.read_usage) is added."""
    jobs = []
    root = results / layout.BENCHMARKS
    for path in sorted(root.rglob("*.tsv")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) < 2:
            raise ValueError(f"{path}: no measurement row (a Snakemake benchmark file has a header and one row)")
        header, values = lines[0].split("\t"), lines[-1].split("\t")
        row = dict(zip(header, values))
        relative = path.relative_to(root)
        cpu, peak = _number(row.get("cpu_time")), _number(row.get("max_rss"))
        forked = job_server.read_usage(layout.log_of_benchmark(results, path))
        if forked is not None:  # the job's own process is small, and may have ended before Snakemake measured it
            cpu = forked.cpu_seconds + (0.0 if math.isnan(cpu) else cpu)
            peak = max(forked.max_rss_mb, peak)
        jobs.append(Job(str(relative), relative.parts[0], float(row["s"]), cpu, peak, path.stat().st_mtime,
                        forked is not None))
    if not jobs:
        raise ValueError(f"{root}: no benchmark files; is {results} a finished run?")
    return jobs


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "-", "NA") else float("nan")
    except ValueError:
        return float("nan")


def first_start(jobs: list[Job]) -> float:
    """When the run's first job started (each start = its file's time less its wall clock)."""
    return min(j.finished - j.seconds for j in jobs)


def span_seconds(jobs: list[Job]) -> float:
    """First job's start to last job's end."""
    return max(j.finished for j in jobs) - first_start(jobs)


def time_report(log: Path) -> dict:
    """The command, its wall clock, CPU seconds and exit status from the report `/usr/bin/time -v` appends to its
    log."""
    fields = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.strip().rpartition(": ")
        if sep:
            fields[key] = value
    try:
        clock = [float(part) for part in fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")]
        cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
        status = int(fields["Exit status"])
        command = fields["Command being timed"].strip('"')
    except (KeyError, ValueError):
        raise ValueError(f"{log}: no report of /usr/bin/time -v at its end") from None
    wall = sum(value * 60 ** power for power, value in enumerate(reversed(clock)))
    return {"log": str(log), "command": command, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "exit_status": status}


def make_targets(make: dict | None) -> list[str] | None:
    """The make targets a time report (`time_report`) timed (variables such as CORES=2 left out); None when it timed
    no make command."""
    words = shlex.split(make["command"]) if make else []
    if not words or Path(words[0]).name != "make":
        return None
    return [word for word in words[1:] if "=" not in word]


def is_make_demo(make: dict | None) -> bool:
    """Whether a time report is of `make demo`, the command that W8's time target is about."""
    return make_targets(make) == ["demo"]


def machine() -> str:
    """The CPU model, its core count and the memory of the machine this runs on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB"


def paper_table(results: Path) -> str:
    path = results / layout.TABLE.format(name=PAPER_TABLE)
    if not path.is_file():
        raise ValueError(f"{path} is missing: the run's tables are made by its rule `table`")
    return path.read_text(encoding="utf-8").strip() + "\n"


def stage_rows(jobs: list[Job]) -> list[str]:
    stages: dict[str, list[Job]] = {}
    for job in jobs:
        stages.setdefault(job.stage, []).append(job)
    rows = ["| stage (folder of its outputs) | jobs | job time (min) | longest job (s) | largest peak memory (MiB) |",
            "|---|---:|---:|---:|---:|"]
    for stage, members in sorted(stages.items(), key=lambda item: -sum(j.seconds for j in item[1])):
        longest = max(members, key=lambda j: j.seconds)
        peak = max((j.peak_mib for j in members if j.peak_mib == j.peak_mib), default=float("nan"))
        rows.append(f"| `{stage}/` | {len(members)} | {sum(j.seconds for j in members) / 60:.1f} | "
                    f"{longest.seconds:.1f} | {peak:.0f} |")
    return rows


@dataclass(frozen=True)
class Targets:
    """What benchmarks/world_targets.py printed about a run, and the command that printed it."""

    command: list[str]
    text: str


def world_targets_command(results: Path, demo_seconds: float | None) -> list[str]:
    """benchmarks/world_targets.py on a run; W8's time target (`make demo` on 2 cores) applies only to the whole
    `make demo` that made a demo run, its wall clock given as `demo_seconds`."""
    return [str(WORLD_TARGETS), str(results), *(["--demo-seconds", f"{demo_seconds:.0f}"] if demo_seconds else [])]


def world_targets(results: Path, demo_seconds: float | None) -> Targets:
    if not WORLD_TARGETS.is_file():
        raise ValueError(f"{WORLD_TARGETS} not found: run results-page --targets from the repository root")
    command = world_targets_command(results, demo_seconds)
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ValueError(f"{WORLD_TARGETS} {results} failed: {done.stderr.strip().splitlines()[-1:]}")
    return Targets(command, done.stdout.strip())


def copy_figures(results: Path, figures_folder: Path) -> list[str]:
    """The run's PNG figures copied into `figures_folder` (replacing earlier copies); their names."""
    names = []
    for figure in sorted((results / "figures").glob("*.png")):
        figures_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, figures_folder / figure.name)
        names.append(figure.stem)
    return names


def whole_command(make: dict | None) -> str:
    """The whole command's time, from its `/usr/bin/time -v` report (`time_report`), as the pages say it."""
    if make is None:
        return ""
    return (f"; the whole `{make['command']}`, its set-up included, {make['wall_seconds'] / 60:.1f} min "
            f"(`/usr/bin/time -v` in {make['log']}, exit status {make['exit_status']})")


def readme_block(results: Path, command: str, table: str, jobs: list[Job], host: str, conditions: str,
                 make: dict | None = None) -> str:
    return "\n".join([
        README_START, "",
        f"From the run in `{results}` on {host}: {len(jobs)} jobs, {span_seconds(jobs) / 60:.1f} min from the first "
        f"job's start to the last one's end{whole_command(make)} ({conditions}). Written by `{command}`:", "",
        table.strip(), "", README_END])


def readme_markers(readme: Path) -> tuple[str, int, int]:
    """The README's text and where its table block starts and ends (ValueError naming the file without them)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: the marker comments {README_START!r} and {README_END!r} are missing")
    return text, start, end + len(README_END)


def page(results: Path, command: str, table: str, jobs: list[Job], host: str, conditions: str,
         figures: list[str], figures_link: str, targets: Targets | None, make: dict | None = None) -> str:
    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(j.finished for j in jobs)))
    out = [f"<!-- Generated by `{command}` from the run's files. Do not edit: rerun the command. -->", "",
           f"# The run in `{results}`", "",
           f"Written by `{command}` from the run's own files: `{layout.TABLE.format(name=PAPER_TABLE)}`, one "
           f"benchmark file per job under `{layout.BENCHMARKS}/` and the figures.", "",
           f"- machine (where this page was generated, in the normal course the one that ran the workflow): {host}",
           f"- {len(jobs)} jobs, the last finished {finished}; {span_seconds(jobs) / 60:.1f} min from the first job's "
           f"start to the last one's end, {sum(j.seconds for j in jobs) / 60:.1f} min of job time (jobs run side by "
           f"side){whole_command(make)}",
           f"- conditions: {conditions}", "",
           "## Error rates", "", table.strip(), "",
           "## Where the time goes", "", *stage_rows(jobs), ""]
    if targets is not None:
        out += ["## Targets and findings", "",
                f"`{shlex.join(targets.command)}` prints:", "",
                "```text", targets.text, "```", ""]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{name}]({figures_link}/{name}.png)\n" for name in figures]
    return "\n".join(out).rstrip() + "\n"


def _command(args: argparse.Namespace) -> str:
    """The command as given (the pages name the command that wrote them)."""
    words = ["asrmerge", "results-page", args.results]
    for name in ("page", "figures", "readme"):
        words += [f"--{name}", getattr(args, name)] if getattr(args, name) else []
    words += ["--targets"] if args.targets else []
    words += ["--make-log", args.make_log] if args.make_log else []
    return shlex.join(words + ["--conditions", args.conditions])


def _results_page(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not results.is_dir():
        raise ValueError(f"results folder {results} does not exist")
    command = _command(args)
    out = Path(args.page or Path("docs") / "measured" / f"{results.name}.md")
    figures_folder = Path(args.figures or out.parent.parent / "figures" / results.name)
    readme = readme_markers(Path(args.readme)) if args.readme else None  # checked before anything is written
    jobs = read_jobs(results)
    table = paper_table(results)
    host = machine()
    make = time_report(Path(args.make_log)) if args.make_log else None
    targets = world_targets(results, make["wall_seconds"] if is_make_demo(make) else None) if args.targets else None
    figures = copy_figures(results, figures_folder)
    link = Path(os.path.relpath(figures_folder, out.parent)).as_posix()
    write_text(out, page(results, command, table, jobs, host, args.conditions, figures, link, targets, make))
    print(f"wrote {out} ({len(figures)} figures in {figures_folder})")
    if readme is not None:
        text, start, end = readme
        write_text(args.readme, text[:start] + readme_block(results, command, table, jobs, host, args.conditions, make)
                   + text[end:])
        print(f"wrote the table of {args.readme}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the results-page subcommand."""
    p = subparsers.add_parser(
        "results-page", help="write a run's results page for the docs (and the README's table) from its files",
        description="Inputs: RESULTS/tables/paper.md, RESULTS/benchmarks/ and RESULTS/figures/*.png. Outputs: --page, "
                    "the figures copied to --figures, and with --readme the table between its marker comments.")
    p.add_argument("results", help="a finished run's results folder")
    p.add_argument("--page", default=None, help="the page to write (default docs/measured/<folder name>.md)")
    p.add_argument("--figures", default=None,
                   help="folder that receives the run's PNG figures (default docs/figures/<folder name>)")
    p.add_argument("--readme", default=None, help="also write the table into this README between its markers")
    p.add_argument("--targets", action="store_true",
                   help=f"add what {WORLD_TARGETS} prints about the run (targets W1–W8 of the demo world, findings)")
    p.add_argument("--make-log", default=None,
                   help="the log of `/usr/bin/time -v make TARGET` that made the run: the page gives the whole "
                        "command's time, and with --targets a `make demo`'s is held against W8's time target")
    p.add_argument("--conditions", required=True,
                   help="how the run was made, which its files do not record: e.g. 'alone' or 'beside the test suite'")
    declare_paths(p, inputs=["results", "make_log"], outputs=["page", "figures", "readme"])
    p.set_defaults(func=_results_page)
