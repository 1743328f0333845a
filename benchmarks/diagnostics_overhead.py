"""What merge diagnostics cost: each merge timed alone, with in-merge diagnostics, and as the workflow runs it.

    .venv/bin/python benchmarks/diagnostics_overhead.py results/demo [--methods task_arithmetic,tsv_m] [--repeats 3]

The workflow's merge job writes the merged τ only; the diagnostics the figures need come from a merge_diagnostics job
(asrmerge.merging.diagnostics.diagnose_merge: one `svdvals` per matrix, the task vectors' spectra read from their
cached files, computed once per task vector by the task_spectra job for every merge of the run). The merge command's
--diagnostics computes them during the merge instead (T + 1 `svdvals` per matrix). Inputs: the folder's base model,
task vectors and, when present, their cached spectra (`asrmerge.layout`; otherwise they are computed first, and that
one-off cost is printed); outputs go to a temporary folder. Prints one Markdown row per method: best-of-N wall clock
of the merge alone, with in-merge diagnostics, and of the workflow's diagnostics job, with the ratios to the merge.
"""

from __future__ import annotations

import argparse
import glob
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrmerge import layout  # noqa: E402
from asrmerge.merging import merge  # noqa: E402
from asrmerge.merging.diagnostics import diagnose_merge, write_task_spectra  # noqa: E402

DEFAULT_METHODS = "task_arithmetic,ties,tsv_m,boosted_tsv_m,iso_c"


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results folder with models/base and task_vectors/")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the best is reported")
    args = parser.parse_args(argv)
    base = layout.path(args.results, layout.BASE_MODEL)
    task_vectors = sorted(glob.glob(layout.path(args.results, layout.TASK_VECTOR, domain="*")))
    if not task_vectors:
        parser.error(f"no task vectors under {args.results}")
    print(f"{len(task_vectors)} task vectors of {base}\n")
    with tempfile.TemporaryDirectory() as tmp:
        out, diagnostics = Path(tmp, "tau.safetensors"), Path(tmp, "diagnostics.json")
        spectra = [Path(layout.path(args.results, layout.TASK_SPECTRA, domain=Path(p).stem)) for p in task_vectors]
        if not all(path.is_file() for path in spectra):
            spectra = [Path(tmp, f"{i}.spectra.json") for i in range(len(task_vectors))]
            start = time.perf_counter()
            for tau, path in zip(task_vectors, spectra):
                write_task_spectra(tau, path)
            print(f"task spectra (once per task vector, for every merge): {time.perf_counter() - start:.2f} s\n")
        print("| method | merge alone (s) | with in-merge diagnostics (s) | ratio | diagnostics job (s) | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for method in args.methods.split(","):
            def plain(method: str = method) -> None:
                merge(base, task_vectors=task_vectors, method=method, out_path=out)

            def tapped(method: str = method) -> None:
                merge(base, task_vectors=task_vectors, method=method, out_path=out, diagnostics_path=diagnostics)

            without, with_ = best_of(args.repeats, plain), best_of(args.repeats, tapped)
            plain()
            job = best_of(args.repeats, lambda: diagnose_merge(out, task_vectors, spectra, diagnostics))
            print(f"| {method} | {without:.2f} | {with_:.2f} | {with_ / without:.2f}x | {job:.2f} | "
                  f"{job / without:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
