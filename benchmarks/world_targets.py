"""Does a finished run tell the paper's story? The four checks of the offline demo world, from tables/wer.csv.

    .venv/bin/python benchmarks/world_targets.py [results/demo]

1. the zero-shot foundation is weak on the domains: mean WER over the EP domain tests ≥ 1.5 × its WER on general EP
   speech (the general_test set);
2. every domain fine-tune improves its own domain's WER by ≥ 30 % relative to zero-shot;
3. the joint (multi-domain) fine-tune forgets: ≥ 10 % relative WER increase on English or on the multilingual set;
4. (time) is measured outside: the wall clock of `make demo`.
Prints one line per check with the numbers and PASS/MISS; exits 0 either way (a report, not a test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

FOUNDATION_GAP = 1.5
OWN_DOMAIN_GAIN = 0.30
FORGETTING = 0.10


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results/demo", type=Path)
    args = parser.parse_args(argv)
    frame = pd.read_csv(args.results / "tables" / "wer.csv")
    base = frame[frame.system == "base"].set_index("test_set")

    domain_sets = base.index[base.group == "ID"].tolist()
    general = base.index[base.group == "EP general"].tolist()
    if not domain_sets or not general:
        print("needs domain test sets and a general_test set (role general_test) in the run", file=sys.stderr)
        return 1
    id_wer, general_wer = base.loc[domain_sets, "wer"].mean(), base.loc[general, "wer"].mean()
    ratio = id_wer / general_wer
    print(f"1. foundation: EP domains {100 * id_wer:.1f}% vs general EP {100 * general_wer:.1f}% = {ratio:.2f}x "
          f"(target >= {FOUNDATION_GAP}x) {verdict(ratio >= FOUNDATION_GAP)}")

    gains = {}
    for domain in domain_sets:
        own = frame[(frame.system == f"finetuned/{domain}") & (frame.test_set == domain)]
        if not own.empty:
            gains[domain] = 1 - own.wer.iloc[0] / base.loc[domain, "wer"]
    worst = min(gains, key=gains.get)
    listing = ", ".join(f"{d} {100 * g:.0f}%" for d, g in gains.items())
    print(f"2. own-domain gain of each fine-tune (relative to zero-shot): {listing}; smallest {worst} "
          f"{100 * gains[worst]:.0f}% (target >= {100 * OWN_DOMAIN_GAIN:.0f}%) "
          f"{verdict(gains[worst] >= OWN_DOMAIN_GAIN)}")

    joint = frame[frame.system == "joint"].set_index("test_set")
    losses = {}
    for group in ("English", "Multilingual"):
        sets = base.index[base.group == group].tolist()
        if sets:
            before, after = base.loc[sets, "wer"].mean(), joint.loc[sets, "wer"].mean()
            losses[group] = (before, after, after / before - 1)
    listing = ", ".join(f"{g} {100 * b:.1f}% -> {100 * a:.1f}% ({100 * r:+.0f}%)" for g, (b, a, r) in losses.items())
    best = max((r for _, _, r in losses.values()), default=float("nan"))
    print(f"3. joint fine-tune forgetting: {listing} (target >= +{100 * FORGETTING:.0f}% on one) "
          f"{verdict(best >= FORGETTING)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
