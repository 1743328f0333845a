"""What the workflow's merge diagnostics cost: each merge timed with and without them, on one results folder.

    .venv/bin/python benchmarks/diagnostics_overhead.py results/demo [--methods task_arithmetic,tsv_m] [--repeats 3]

The workflow's merge rule always asks for diagnostics (spectra and effective rank of every matrix, for the figures);
they ride on the merge's own fast paths (side-by-side SVD workers, slices), so the merged task vector has the same
bytes with and without them. Their own cost is T + 1 `svdvals` per matrix (plus one per Newton–Schulz factor).
Inputs: the folder's base model and task vectors (`asrmerge.layout`); outputs go to a temporary folder. Prints one
Markdown row per method: best-of-N wall clock without and with diagnostics and their ratio.
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
    print("| method | without diagnostics (s) | with diagnostics (s) | ratio |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        out, diagnostics = Path(tmp, "tau.safetensors"), Path(tmp, "diagnostics.json")
        for method in args.methods.split(","):
            def plain(method: str = method) -> None:
                merge(base, task_vectors=task_vectors, method=method, out_path=out)

            def tapped(method: str = method) -> None:
                merge(base, task_vectors=task_vectors, method=method, out_path=out, diagnostics_path=diagnostics)

            without, with_ = best_of(args.repeats, plain), best_of(args.repeats, tapped)
            print(f"| {method} | {without:.2f} | {with_:.2f} | {with_ / without:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
