"""Merge time and memory from Whisper tiny to large-v3: seconds and peak resident memory against parameters.

Run on purpose, not in the tests (hours on 2 cores; resumable):

    nohup nice -n 5 .venv/bin/python benchmarks/merge_scaling.py [--sizes tiny,base,small,medium,large-v3]
        [--tasks 10] [--tasks-at large-v3=4,medium=4] [--methods ...] [--libraries ours,mergekit,fusionbench]
        > .bench/merge-scaling.log 2>&1 &
    .venv/bin/python benchmarks/merge_scaling.py --write-doc     # table + figure from the results file
        [--section scaling-libraries --work-dir ...]               # another results file, another section

For each size, one at a time: the synthetic checkpoints of benchmarks/merge_speed.py at that Whisper geometry (its
SCALES: transformers' WhisperConfig values of the released models), stored in float16 as Whisper is released, base
+ T fine-tunes; for RegMean, T synthetic Gram statistics files (per linear weight (in, in), a low-rank part shared by
the tasks, a low-rank part of each task and a positive diagonal, so each is positive definite); the I/O floor (read
every checkpoint once, write and fsync one model of the base's size); then every method in asrmerge
(`asrmerge merge --finetuned … --out-model …`, merge_speed's command) and, where they have it, in mergekit and
FusionBench (merge_speed's commands, same parameters), each run its own process measured by merge_speed.measure
(wall clock, peak RSS from wait4; stopped past --memory-limit-gib or --timeout: that is a result too). The
checkpoints are deleted before the next size (disk: large-v3 in float16 is 3.1 GB a model).

Every finished cell is written at once to the results file (.bench/merge-scaling/results.json), keyed by size, row
and library, with the invocation that measured it; a stopped run resumes at the first missing cell, and measures the
I/O floor again in its own invocation (a ratio to the floor is only taken within one invocation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_speed as ms  # noqa: E402  (the generator, the commands and the measuring live there)

from asrmerge.layout import MODEL_WEIGHTS  # noqa: E402
from asrmerge.atomic import write_json, write_section  # noqa: E402

ROOT = ms.ROOT
SIZES = ("tiny", "base", "small", "medium", "large-v3")
#: The methods measured: the elementwise ones, TIES (per-tensor trim, mergekit's definition), the subspace merges and
#: RegMean (the first row of each in merge_speed.rows, or a row of its own for RegMean, which has none there).
METHODS = ("model_soup", "task_arithmetic", "ties", "iso_c", "tsv_m", "boosted_tsv_m", "regmean")
WORK = ROOT / ".bench" / "merge-scaling"
DOC_PAGE = ROOT / "docs" / "measured" / "scaling.md"
#: The page's sections, one per results file (--section): a section's markers and figure follow from its name.
SECTIONS = ("scaling", "scaling-libraries")


def doc_targets(section: str) -> tuple[tuple[str, str], Path]:
    """The page markers and the figure file of one section."""
    return (f"<!-- {section}:begin -->", f"<!-- {section}:end -->"), ROOT / "docs" / "figures" / f"merge_{section}.png"


def method_of(label: str) -> str:
    """The method a row label names ("ties (density=0.2, ...)" -> "ties")."""
    return label.split(" ")[0]


LIBRARY_NAMES = {"ours": "asrmerge", "mergekit": "mergekit", "fusionbench": "FusionBench"}
OTHER_LIBRARIES = tuple(name for name in LIBRARY_NAMES if name != "ours")
#: asrmerge's goal for the peak resident memory of every method at large-v3 size: half this 24 GiB machine, which
#: other work shares.
MEMORY_GOAL_GIB = 12.0
#: Synthetic Gram statistics: rank of the shared and of each task's part, and the range of the diagonal.
GRAM_RANK, GRAM_DIAGONAL = 32, (0.5, 1.5)


def scaling_rows(exclude_keys: list[str]) -> list[ms.Row]:
    """The rows of METHODS, in that order."""
    first = {}
    for row in ms.rows(exclude_keys):
        first.setdefault(row.method, row)
    first["regmean"] = ms.Row("regmean", absent={"mergekit": "no RegMean", "fusionbench": "computes its Grams from data"})
    return [first[m] for m in METHODS]


def is_linear_weight(name: str, shape: tuple[int, ...]) -> bool:
    """The weights `asrmerge statistics` keeps Gram matrices for: Whisper's linear layers (attention projections and
    the two FFN matrices; the output projection is the tied token embedding)."""
    return len(shape) == 2 and name.endswith(("_proj.weight", "fc1.weight", "fc2.weight"))


def build_statistics(folder: Path, base: Path, finetuned: list[Path], seed: int, dtype: str) -> list[Path]:
    """One gram statistics file per fine-tune under `folder` (reused when its marker matches), recording the
    fine-tune's fingerprint as the engine requires."""
    import torch

    from asrmerge.merging.checkpoint import MODEL_FINGERPRINT, SafetensorsWriter, TensorEntry, open_checkpoint
    from asrmerge.merging.spec import STATISTICS_FILE_KIND

    paths = [folder / f"{f.name}.gram.safetensors" for f in finetuned]
    marker = folder / "statistics.json"
    with open_checkpoint(base) as ckpt:
        shapes = {n: tuple(ckpt.shapes[n]) for n in ckpt.names if is_linear_weight(n, tuple(ckpt.shapes[n]))}
    origins = []
    for path in finetuned:
        with open_checkpoint(path) as ckpt:
            origins.append(ckpt.fingerprint)
    spec = {"origins": origins, "seed": seed, "dtype": dtype, "rank": GRAM_RANK, "diagonal": list(GRAM_DIAGONAL)}
    if marker.is_file() and json.loads(marker.read_text()) == spec and all(p.is_file() for p in paths):
        return paths
    print(f"[setup] writing {len(paths)} synthetic Gram statistics files ({dtype}) to {folder}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    stored = getattr(torch, dtype)
    names = sorted(shapes)
    entries = [TensorEntry(n, stored, (shapes[n][1], shapes[n][1])) for n in names]
    writers = [SafetensorsWriter(p, entries, {"format": "pt", "kind": STATISTICS_FILE_KIND, "statistics": "gram",
                                              MODEL_FINGERPRINT: origin}).__enter__()
               for p, origin in zip(paths, origins)]
    low, high = GRAM_DIAGONAL
    for name in names:
        width = shapes[name][1]
        gen = ms._generator(seed, "gram/" + name)
        shared = torch.randn(width, GRAM_RANK, generator=gen) / math.sqrt(GRAM_RANK)
        for task, writer in enumerate(writers):
            own = torch.randn(width, GRAM_RANK, generator=ms._generator(seed, f"gram{task}/{name}")) / math.sqrt(GRAM_RANK)
            gram = shared @ shared.T + own @ own.T
            gram.diagonal().add_(torch.empty(width).uniform_(low, high, generator=gen))
            writer.write(name, gram.to(stored))
    for writer in writers:
        writer.__exit__(None, None, None)
    marker.write_text(json.dumps(spec))
    return paths


# ------------------------------------------------------------------------------------------------------------ results


def cell_key(size: str, label: str, library: str) -> str:
    return f"{size} | {label} | {library}"


def merge_results(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Cells of another results file (another work folder, run beside this one on the same checkpoints) that this one
    lacks, with their invocations and those invocations' floors and start-ups; a cell present in both is refused."""
    both = sorted(set(into["cells"]) & set(other["cells"]))
    if both:
        raise ValueError(f"both results hold the cell {both[0]!r}")
    into["cells"].update(other["cells"])
    into["invocations"].update(other["invocations"])
    for size, info in other["sizes"].items():
        mine = into["sizes"].setdefault(size, {k: v for k, v in info.items() if k not in ("floors", "startups")})
        if mine["tasks"] != info["tasks"] or mine["parameters"] != info["parameters"]:
            raise ValueError(f"{size}: the two results come from different checkpoints")
        for key in ("floors", "startups"):
            mine.setdefault(key, {}).update(info.get(key, {}))
    return into


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"invocations": {}, "sizes": {}, "cells": {}}


def _fmt(run: ms.Run | None) -> tuple[str, str]:
    if run is None:
        return "–", "–"
    if not run.ok:
        return run.status, f"{run.peak_gib:.2f}" if run.peak_gib else "–"
    return f"{run.seconds:.1f}" + ("*" if run.disturbed else ""), f"{run.peak_gib:.2f}"


def render(results: dict[str, Any]) -> str:
    """The Markdown of the results: a head line per invocation and size, one table (size × method)."""
    cells = {k: ms.Run(**v) for k, v in results["cells"].items()}
    head = [f"- Invocation {key}: {inv['machine']}; {inv['date']}; torch threads: {inv['threads'] or 'all cores'}."
            for key, inv in results["invocations"].items()]
    head += ["", "Sizes:", ""]
    lines = ["| size (parameters, T) | method | asrmerge s | GiB | ÷ I/O floor | mergekit s | GiB | ÷ asrmerge "
             "| FusionBench s | GiB | ÷ asrmerge |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        info = results["sizes"].get(size)
        if info is None:
            continue
        floors = {k: ms.Run(**v) for k, v in info["floors"].items()}
        startups = info.get("startups", {})
        floor_text = "; ".join(f"{f.seconds:.1f} s, {f.peak_gib:.2f} GiB (invocation {k}"
                               + (f"; asrmerge start-up {startups[k]['seconds']:.1f} s" if k in startups else "") + ")"
                               for k, f in floors.items())
        statistics = (f"RegMean's Gram statistics {info['statistics_gb']:.2f} GB ({info['statistics_dtype']})"
                      if "statistics_gb" in info else "no Gram statistics (RegMean not run)")
        head.append(f"- **{size}**: {info['parameters'] / 1e6:.1f}M parameters, float16, base + {info['tasks']} "
                    f"fine-tunes, {info['input_gb']:.2f} GB of inputs ({info['cache']}); {statistics}; I/O "
                    f"floor: {floor_text}.")
        for label in info["labels"]:
            if not any(cell_key(size, label, library) in cells for library in LIBRARY_NAMES):
                continue  # a method not run at this size
            ours = cells.get(cell_key(size, label, "ours"))
            floor = floors.get(ours.invocation) if ours is not None else None
            line = [f"{size} ({info['parameters'] / 1e6:.0f}M, T={info['tasks']})", label, *_fmt(ours),
                    ms._ratio(ours, floor, "seconds")]
            for library in OTHER_LIBRARIES:
                other = cells.get(cell_key(size, label, library))
                line += [*_fmt(other), ms._ratio(other, ours, "seconds")]
            lines.append("| " + " | ".join(line) + " |")
    notes = ["", *summary(results, cells), *against_libraries(results, cells)]
    notes += ["", "Seconds: wall clock of the whole process (start-up, loading, merging, writing); GiB: its peak "
             "resident memory; ÷ asrmerge: the library's seconds over asrmerge's, both of one invocation. – : the "
             "library has no such method (or was not run).",
             "\\* other processes used more than 10 % of the CPUs during that run (the machine was shared)."]
    if any(ms.NO_RATIO in line for line in lines):
        notes.append("‡ the two runs of that ratio were measured in different invocations: no ratio.")
    return "\n".join(head) + "\n\n" + "\n".join(lines + notes) + "\n"


def summary(results: dict[str, Any], cells: dict[str, ms.Run]) -> list[str]:
    """Per asrmerge method: its peak memory at the largest size measured against the machine's RAM, and how its
    seconds and memory grew from the smallest size to the largest (both measured)."""
    sizes = [s for s in SIZES if s in results["sizes"]]
    lines = []
    for label in results["sizes"][sizes[-1]]["labels"] if sizes else []:
        runs = [(s, cells.get(cell_key(s, label, "ours"))) for s in sizes]
        runs = [(s, r) for s, r in runs if r is not None and r.ok]
        if len(runs) < 2:
            continue
        (small, first), (large, last) = runs[0], runs[-1]
        grow = results["sizes"][large]["parameters"] / results["sizes"][small]["parameters"]
        goal = ""
        if large == "large-v3":
            goal = f" (goal ≤ {MEMORY_GOAL_GIB:g} GiB: {'met' if last.peak_gib <= MEMORY_GOAL_GIB else 'missed'})"
        lines.append(f"- {label}: at {large}, {last.seconds:.0f} s and {last.peak_gib:.2f} GiB peak{goal}; from {small} to "
                     f"{large} ({grow:.0f}× the parameters) the seconds grew {last.seconds / first.seconds:.1f}×, the "
                     f"memory {last.peak_gib / first.peak_gib:.1f}×.")
    return lines


def against_libraries(results: dict[str, Any], cells: dict[str, ms.Run]) -> list[str]:
    """Per other library: its seconds and peak memory over asrmerge's in the cells both ran in one invocation, and
    its runs that did not finish."""
    lines = []
    for library in OTHER_LIBRARIES:
        pairs, unfinished = [], []
        for size, info in results["sizes"].items():
            for label in info["labels"]:
                other, ours = cells.get(cell_key(size, label, library)), cells.get(cell_key(size, label, "ours"))
                if other is None or ours is None:
                    continue
                if not other.ok:
                    unfinished.append(f"{method_of(label)} at {size} ({other.status})")
                elif ours.ok and other.invocation == ours.invocation:
                    pairs.append((other.seconds / ours.seconds, other.peak_gib / ours.peak_gib))
        if not pairs and not unfinished:
            continue
        line = f"- {LIBRARY_NAMES[library]} beside asrmerge ({len(pairs)} runs, each ratio within one invocation)"
        if pairs:
            seconds, memory = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
            line += (f": {seconds[0]:.2f}× to {seconds[-1]:.2f}× asrmerge's seconds (median "
                     f"{seconds[len(seconds) // 2]:.2f}×), {memory[0]:.1f}× to {memory[-1]:.1f}× its peak memory")
        lines.append(line + (f"; not finished: {', '.join(unfinished)}" if unfinished else "") + ".")
    return lines


def figure(results: dict[str, Any], path: Path) -> None:
    """Seconds and peak GiB against parameters, one line per method and library, the I/O floor in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.0))
    sizes = [s for s in SIZES if s in results["sizes"]]
    params = {s: results["sizes"][s]["parameters"] / 1e6 for s in sizes}
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = {"ours": "-o", "mergekit": "--s", "fusionbench": ":^"}
    labels = {label for s in sizes for label in results["sizes"][s]["labels"]}
    for label in sorted(labels, key=lambda lab: METHODS.index(method_of(lab))):
        for library, style in styles.items():
            points = [(params[s], ms.Run(**results["cells"][k])) for s in sizes
                      if (k := cell_key(s, label, library)) in results["cells"]]
            done = [(p, r) for p, r in points if r.ok]
            color = colors[method_of(label)]
            stopped = [(p, r) for p, r in points if r.stopped_at_memory_limit]
            right.plot([p for p, _ in stopped], [r.peak_gib for _, r in stopped], "x", color=color, markersize=9)
            if not done:
                continue
            name = f"{method_of(label)} ({LIBRARY_NAMES[library]})"
            left.plot([p for p, _ in done], [r.seconds for _, r in done], style, color=color, label=name)
            right.plot([p for p, _ in done], [r.peak_gib for _, r in done], style, color=color, label=name)
    floors = [(params[s], min(f["seconds"] for f in results["sizes"][s]["floors"].values())) for s in sizes]
    left.plot([p for p, _ in floors], [f for _, f in floors], "-", color="grey", linewidth=3, alpha=0.5,
              label="I/O floor")
    for axis, title in ((left, "wall clock (s)"), (right, "peak resident memory (GiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("parameters (millions)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / ms.GIB
    right.axhline(ram, color="red", linewidth=1, alpha=0.6, label=f"this machine's RAM ({ram:.0f} GiB)")
    right.axhline(MEMORY_GOAL_GIB, color="red", linewidth=1, alpha=0.6, linestyle="--",
                  label=f"asrmerge's goal at large-v3 ({MEMORY_GOAL_GIB:g} GiB)")
    right.plot([], [], "x", color="black", label="run stopped at its memory limit")
    legend = {}  # one legend for both panels, below them, where it hides no line
    for axis in (left, right):
        for handle, name in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(f"Merging T synthetic float16 fine-tunes at Whisper {sizes[0]} … {sizes[-1]} geometry "
                 "(one CPU machine)")
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    staged = path.with_suffix(".partial.png")
    fig.savefig(staged, dpi=110)
    plt.close(fig)
    staged.replace(path)


def write_doc(results: dict[str, Any], page: Path, section: str) -> None:
    markers, figure_path = doc_targets(section)
    figure(results, figure_path)
    picture = f"![Merge time and memory against parameters]({Path('..') / 'figures' / figure_path.name})\n\n"
    write_section(page, markers, picture + render(results))


# ------------------------------------------------------------------------------------------------------------ running


def parse_tasks_at(text: str) -> dict[str, int]:
    found = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        size, sep, count = item.partition("=")
        if not sep or size not in SIZES or not count.isdigit() or int(count) < 2:
            raise argparse.ArgumentTypeError(f"--tasks-at takes SIZE=T items (T >= 2, SIZE one of {SIZES}), got {item!r}")
        found[size] = int(count)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated Whisper sizes, run in this order")
    parser.add_argument("--tasks", type=int, default=10, help="fine-tunes T at every size not in --tasks-at")
    parser.add_argument("--tasks-at", type=parse_tasks_at, default={}, help="SIZE=T,...: another T at those sizes")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated, a subset of the default, run in this order")
    parser.add_argument("--libraries", default="ours,mergekit,fusionbench")
    parser.add_argument("--statistics-dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                        help="storage of the synthetic Gram statistics (float16 halves their disk)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every library (default: all cores)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before an asrmerge run is stopped")
    parser.add_argument("--other-timeout", type=float, default=900,
                        help="seconds before a mergekit or FusionBench run is stopped (a result: out of time)")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0,
                        help="stop a run past this resident memory (the machine is shared: well under its RAM)")
    parser.add_argument("--work-dir", type=Path, default=WORK)
    parser.add_argument("--keep", action="store_true", help="keep each size's checkpoints (default: delete them)")
    parser.add_argument("--write-doc", action="store_true",
                        help=f"measure nothing: write the table and figure of the results file into "
                             f"{DOC_PAGE.relative_to(ROOT)}")
    parser.add_argument("--section", choices=SECTIONS, default=SECTIONS[0],
                        help="the page's section that --write-doc writes (each holds one results file)")
    parser.add_argument("--merge-from", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: add the cells of another results file (run beside this one)")
    args = parser.parse_args()
    results_path = args.work_dir / "results.json"
    if args.merge_from:
        write_json(results_path, merge_results(load_results(results_path), load_results(args.merge_from)))
        return
    if args.write_doc:
        write_doc(load_results(results_path), DOC_PAGE, args.section)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    for values, known, what in ((sizes, SIZES, "size"), (methods, METHODS, "method"),
                                (libraries, tuple(LIBRARY_NAMES), "library")):
        unknown = sorted(set(values) - set(known))
        if unknown:
            parser.error(f"unknown {what} {unknown[0]!r}; known: {', '.join(known)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    invocation = started.strftime("%Y%m%dT%H%M%SZ")
    results = load_results(results_path)
    results["invocations"][invocation] = {"machine": ms.machine(), "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                                          "threads": args.threads}
    pythons = {name: ms.ensure_venv(name) for name in libraries if name in ms.LIBRARIES}
    env = ms.run_env(args.threads)
    runs_dir = ms.claim_work_dir(args.work_dir) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        used = {c["invocation"] for c in results["cells"].values()}
        used |= {k for info in results["sizes"].values() for k in info["floors"]}
        results["invocations"] = {k: v for k, v in results["invocations"].items() if k in used or k == invocation}
        write_json(results_path, results)

    for size in sizes:
        tasks = args.tasks_at.get(size, args.tasks)
        folder = args.work_dir / f"{size}-T{tasks}-seed{args.seed}"
        info = results["sizes"].get(size)
        if info is not None and info["tasks"] != tasks:
            parser.error(f"{results_path} holds {size} at T={info['tasks']}: give that T or move the file away")
        wanted = [cell_key(size, r.label, lib) for r in scaling_rows([]) if r.method in methods for lib in libraries
                  if lib == "ours" or getattr(r, lib) is not None]  # labels do not depend on exclude_keys
        if all(key in results["cells"] for key in wanted):
            print(f"[{size}] done: {len(wanted)} cells in {results_path}", flush=True)
            continue
        base, finetuned = ms.build_checkpoints(folder, size, tasks, args.seed, dtype="float16")
        inputs = [base / MODEL_WEIGHTS, *(f / MODEL_WEIGHTS for f in finetuned)]
        input_bytes = sum(p.stat().st_size for p in inputs)
        params, exclude_keys = ms.geometry_of(base)
        by_method = {r.method: r for r in scaling_rows(exclude_keys)}
        rows = [by_method[m] for m in methods]  # in the order asked for
        statistics = (build_statistics(folder / "statistics", base, finetuned, args.seed, args.statistics_dtype)
                      if "regmean" in methods and "ours" in libraries else [])
        # The page cache is warmed before each run only where the inputs fit in it with room to spare; otherwise
        # every run (and the floor) reads them from disk alike.
        cached = input_bytes < 0.5 * ms.available_bytes()
        info = results["sizes"].setdefault(size, {"floors": {}})
        info.update(tasks=tasks, parameters=params, input_gb=input_bytes / 1e9,
                    cache="page cache warmed before each run" if cached else "read from disk: more than the page cache",
                    labels=[r.label for r in scaling_rows(exclude_keys)])
        if statistics:
            info.update(statistics_gb=sum(p.stat().st_size for p in statistics) / 1e9,
                        statistics_dtype=args.statistics_dtype)

        def timed(label: str, cmd: list[str], out: Path, timeout: float, inputs: list[Path] = inputs,
                  cached: bool = cached) -> ms.Run:
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            if cached:
                ms.warm(inputs)
            run = ms.measure(cmd, env, runs_dir / f"{label}.log", timeout, args.memory_limit_gib * ms.GIB)
            run.invocation = invocation
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            print(f"  {label}: {run.status}, {run.seconds:.1f} s, {run.peak_gib:.2f} GiB", flush=True)
            return run

        if invocation not in info["floors"]:
            floor_out = runs_dir / "floor.bin"
            info["floors"][invocation] = timed(f"{size}-io_floor", ms.io_floor_command(inputs, floor_out),
                                               floor_out, args.timeout).__dict__
            if "ours" in libraries:
                info.setdefault("startups", {})[invocation] = timed(f"{size}-startup", ms.startup_command(),
                                                                    runs_dir / "startup", args.timeout).__dict__
            save()
        for library in libraries:  # asrmerge's whole column first: a run stopped at a large size has it
            for row in rows:
                key = cell_key(size, row.label, library)
                if key in results["cells"] or (library != "ours" and getattr(row, library) is None):
                    continue
                out = runs_dir / f"{size}-{row.method}-{library}"
                if library == "ours":
                    cmd = ms.command_ours(row, base, finetuned, out)
                    if row.method == "regmean":
                        cmd += ["--statistics", *map(str, statistics)]
                elif library == "mergekit":
                    cmd = ms.command_mergekit(row, pythons[library], base, finetuned, out, runs_dir, args.threads)
                else:
                    cmd = ms.command_fusionbench(row, pythons[library], base, finetuned, out, runs_dir)
                timeout = args.timeout if library == "ours" else args.other_timeout
                results["cells"][key] = timed(f"{size}-{row.method}-{library}", cmd, out, timeout).__dict__
                save()
        if not args.keep:
            shutil.rmtree(folder)
            print(f"[{size}] checkpoints deleted", flush=True)
    print(render(results))


if __name__ == "__main__":
    main()
