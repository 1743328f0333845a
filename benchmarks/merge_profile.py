"""What bounds the merges that miss their targets in the merge table: the elementwise ones against the I/O floor
(start-up), Iso-C against FusionBench (the per-matrix SVD both libraries run) and DARE against FusionBench (the
random draws both libraries make).

    nice -n 5 .venv/bin/python benchmarks/merge_profile.py [--geometry small] [--repeats 3]
    .venv/bin/python benchmarks/merge_profile.py --write-doc        # into docs/measured/merge-speed.md

1. Start-up, CPU seconds (user + system, from rusage: less sensitive to other load than wall clock) of processes
   that only import: torch, and a merge's start-up (merge_speed.startup_command: everything an asrmerge merge does
   before reading its first tensor).
2. Iso-C's SVDs: the CPU seconds of one thin float32 SVD (asrmerge.merging.linalg.thin_svd, LAPACK on one thread, as
   the merge's workers run) and of the Gram–eigh polar factor (svd_polar_factor) for every matrix shape of the
   geometry, times the number of such matrices: the SVD work of one Iso-C merge, which FusionBench's iso_c does
   too (torch.linalg.svd of every matrix of the summed task vector).
3. DARE's draws: the CPU seconds of one uniform draw per entry of every task vector (torch.rand with a CPU generator,
   which draws on one thread), as asrmerge's dare and FusionBench's (torch.bernoulli) make them.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_speed as ms  # noqa: E402

from asrmerge.atomic import write_json, write_section  # noqa: E402

ROOT = ms.ROOT
RESULTS = ROOT / ".bench" / "merge-profile" / "results.json"
#: Task vectors of the merge table (benchmarks/merge_speed.py, make bench-merge).
TASKS = 10
#: The merge table's results at the same geometry (benchmarks/merge_speed.py), for the bounds it is compared with.
#: The merge table's targets: asrmerge at least this many times faster than FusionBench, elementwise merges within
#: this many times the I/O floor.
FUSIONBENCH_TARGET, FLOOR_TARGET = 2.5, 1.3
MERGE_TABLE = ROOT / ".bench" / "merge-speed" / "results-{geometry}-T10.json"
DOC_PAGE = ROOT / "docs" / "measured" / "merge-speed.md"
DOC_MARKERS = ("<!-- merge-profile:begin -->", "<!-- merge-profile:end -->")
STARTUP = "asrmerge merge start-up"
STARTUPS = {
    "import torch": [sys.executable, "-c", "import torch"],
    STARTUP: ms.startup_command(),
}


def cpu_seconds(cmd: list[str]) -> float:
    """user + system CPU seconds of one run of `cmd` (rusage of the waited child)."""
    pid = os.posix_spawn(cmd[0], cmd, dict(os.environ), file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull,
                                                                        os.O_WRONLY, 0)])
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return usage.ru_utime + usage.ru_stime


def startup(repeats: int) -> dict[str, float]:
    return {label: min(cpu_seconds(cmd) for _ in range(repeats)) for label, cmd in STARTUPS.items()}


def matrix_shapes(geometry: str) -> collections.Counter:
    """Shape -> count of the 2-D tensors Iso-C decomposes at `geometry` (the SVD-excluded ones left out)."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from asrmerge.merging import DEFAULT_SVD_EXCLUDE

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**ms.SCALES[geometry]))
    return collections.Counter(tuple(t.shape) for n, t in model.state_dict().items()
                               if t.ndim == 2 and n != "proj_out.weight"
                               and not any(re.search(p, n) for p in DEFAULT_SVD_EXCLUDE))


def parameter_count(geometry: str) -> int:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**ms.SCALES[geometry]))
    return sum(t.numel() for t in model.state_dict().values())


def draw_seconds(geometry: str, tasks: int, repeats: int) -> float:
    """CPU seconds of one uniform draw per entry of `tasks` task vectors at `geometry` (from a 2^24-entry draw)."""
    import torch

    block, generator = 1 << 24, torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        start = resource.getrusage(resource.RUSAGE_SELF)
        torch.rand(block, generator=generator)
        end = resource.getrusage(resource.RUSAGE_SELF)
        best = min(best, end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime)
    return best * parameter_count(geometry) * tasks / block


def svd_costs(geometry: str, repeats: int) -> list[dict[str, Any]]:
    import torch

    from asrmerge.merging import linalg

    torch.set_num_threads(1)
    rows = []
    for shape, count in sorted(matrix_shapes(geometry).items()):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=gen) * 1e-3 + (torch.randn(shape[0], 8, generator=gen)
                                                         @ torch.randn(8, shape[1], generator=gen)) * 1e-3
        timings = {}
        for label, function in (("thin_svd", linalg.thin_svd), ("gram_polar", linalg.svd_polar_factor)):
            best = float("inf")
            for _ in range(repeats):
                start = resource.getrusage(resource.RUSAGE_SELF)
                function(x)
                end = resource.getrusage(resource.RUSAGE_SELF)
                best = min(best, end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime)
            timings[label] = best
        rows.append({"shape": list(shape), "count": count, **timings})
    return rows


def render(results: dict[str, Any]) -> str:
    s = results["startup"]
    svd = results["svd"]
    total_svd = sum(r["count"] * r["thin_svd"] for r in svd)
    best = sum(r["count"] * min(r["thin_svd"], r["gram_polar"]) for r in svd)
    lines = [f"From `benchmarks/merge_profile.py --geometry {results['geometry']}`, {results['machine']}, "
             f"{results['date']} (load average {results['load_average']:.1f} at its start); CPU seconds (user + "
             f"system), best of {results['repeats']}.", "",
             "| start-up | CPU s |", "|---|---|"]
    lines += [f"| {label} | {seconds:.2f} |" for label, seconds in s.items()]
    lines += ["", f"| matrix shape (Whisper {results['geometry']}) | count | thin SVD, CPU s each | Gram polar factor, "
              "CPU s each |", "|---|---|---|---|"]
    lines += [f"| {r['shape'][0]} × {r['shape'][1]} | {r['count']} | {r['thin_svd']:.3f} | {r['gram_polar']:.3f} |"
              for r in svd]
    lines += ["", f"Iso-C's SVD work at this geometry: {total_svd:.1f} CPU s by thin SVD ({total_svd / 2:.1f} s on 2 "
              f"cores), {best:.1f} CPU s taking the faster of the two per shape. DARE's draws (one per entry of "
              f"{TASKS} task vectors, on one thread): {results['draws']:.1f} CPU s."]
    table = MERGE_TABLE.with_name(MERGE_TABLE.name.format(geometry=results["geometry"]))
    if table.is_file():
        lines += ["", *bounds(json.loads(table.read_text()), s[STARTUP], best / 2, results["draws"])]
    return "\n".join(lines) + "\n"


def _same_invocation(ours: dict[str, Any], theirs: dict[str, Any] | None) -> bool:
    """Whether FusionBench's cell of a row finished in the invocation that measured asrmerge's (a ratio is taken)."""
    return theirs is not None and theirs.get("invocation") == ours["invocation"] and theirs.get("status") == "ok"


def bounds(document: dict[str, Any], startup_seconds: float, svd_seconds: float, draw_seconds: float) -> list[str]:
    """The best ratios a process that starts like asrmerge (and runs Iso-C's SVDs, or DARE's draws) could reach
    against the merge table's I/O floor and FusionBench, from the invocation of each row."""
    out = []
    for row in document["rows"]:
        ours, theirs = row.get("ours"), row.get("fusionbench")
        if ours is None:
            continue
        floor = document["invocations"][ours["invocation"]]["floor"]["seconds"]
        if row["label"] in ELEMENTWISE_ROWS:
            best = (floor + startup_seconds) / floor
            out.append(f"- {ELEMENTWISE_ROWS[row['label']]}: {ours['seconds']:.1f} s = {ours['seconds'] / floor:.2f}× the I/O floor of "
                       f"{floor:.1f} s (same invocation). The floor starts no interpreter; asrmerge's start-up alone "
                       f"({startup_seconds:.2f} CPU s above) added to the floor is {best:.2f}× it, before one tensor "
                       f"is merged" + (f", so the {FLOOR_TARGET}× target cannot be met by a process that imports "
                                      "torch." if best > FLOOR_TARGET else "."))
        if row["label"] == "iso_c" and _same_invocation(ours, theirs):
            best = theirs["seconds"] / (floor + startup_seconds + svd_seconds)
            out.append(f"- Iso-C: {ours['seconds']:.1f} s against FusionBench's {theirs['seconds']:.1f} s "
                       f"({theirs['seconds'] / ours['seconds']:.2f}×, same invocation: the {FUSIONBENCH_TARGET}× "
                       f"target {'met' if theirs['seconds'] >= FUSIONBENCH_TARGET * ours['seconds'] else 'missed'} "
                       "there). Both run one SVD of every "
                       f"matrix of the summed task vector; those SVDs take {svd_seconds:.1f} s on 2 cores at best "
                       f"(above), so with the I/O floor and the start-up no merge could be more than {best:.2f}× "
                       "faster than FusionBench here.")
        if row["label"] == "dare (p=0.9)" and _same_invocation(ours, theirs):
            best = theirs["seconds"] / (floor + startup_seconds + draw_seconds)
            out.append(f"- DARE: {ours['seconds']:.1f} s against FusionBench's {theirs['seconds']:.1f} s "
                       f"({theirs['seconds'] / ours['seconds']:.2f}×, same invocation). Both draw one random number "
                       f"per entry of every task vector ({draw_seconds:.1f} CPU s on one thread, above; the same "
                       "draws give the same merge, so they cannot be skipped), so with the I/O floor and the start-up "
                       f"no merge could be more than {best:.2f}× faster than FusionBench here.")
    return out


#: The elementwise rows of the merge table, against the I/O floor.
ELEMENTWISE_ROWS = {"model_soup": "Model Soup", "task_arithmetic": "Task Arithmetic"}


def write_doc(results: dict[str, Any], page: Path) -> None:
    write_section(page, DOC_MARKERS, render(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", choices=sorted(ms.SCALES), default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-doc", action="store_true", help=f"write the tables into {DOC_PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.write_doc:
        write_doc(json.loads(RESULTS.read_text()), DOC_PAGE)
        return
    started = time.perf_counter()
    results = {"machine": ms.machine(), "geometry": args.geometry, "repeats": args.repeats,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "load_average": os.getloadavg()[0], "startup": startup(args.repeats),
               "svd": svd_costs(args.geometry, args.repeats), "draws": draw_seconds(args.geometry, TASKS, args.repeats)}
    results["seconds"] = time.perf_counter() - started
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS, results)
    print(render(results))


if __name__ == "__main__":
    main()
