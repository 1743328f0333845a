"""Does a finished run make merging a real question? Targets W1–W8 of the demo world, and the paper's findings.

    .venv/bin/python benchmarks/world_targets.py [results/demo] [--demo-seconds S] [--same-as OTHER_RESULTS]

Reads what the workflow wrote (tables/wer.csv, scores/, selection/, merges/*/diagnostics.json, task_vectors/,
models/base) and prints one line per target with its numbers and PASS/MISS, then the findings, each with the numbers
behind it. The wall clock of `make demo` (W8) is measured outside and passed with --demo-seconds; --same-as compares
this run's tables with a second run from scratch. A report, not a test: exits 0 whatever the verdicts.

W1 zero-shot EP ID WER (mean over the domain test sets) between 15 % and 60 %
W2 zero-shot WER on random EP word sequences (role words_test) <= 40 %: the foundation listens
W3 each ID-FT's gain on its own domain vs zero-shot >= 25 % relative, on every domain
W4 Full-FT forgetting on English or the multilingual sets >= +10 % relative
W5 best merge at its validation-chosen λ recovers >= 50 % of Full-FT's EP-ID gain over zero-shot
W6 at least half of the λ-scaled branches choose a λ other than the smallest of their grid
W7 best vs worst merge on EP ID differ with MAPSSWE p < 0.05 (utterances of all domain test sets pooled)
W8 `make demo` <= 12 min on 2 cores; a second run from scratch gives the identical table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asrmerge import layout  # noqa: E402
from asrmerge.report.results_page import read_jobs  # noqa: E402
from asrmerge.report.tables import load_utterance_errors  # noqa: E402
from asrmerge.evaluation.scoring import mapsswe  # noqa: E402

ID_RANGE = (0.15, 0.60)
WORDS_MAX = 0.40
OWN_DOMAIN_GAIN = 0.25
FORGETTING = 0.10
RECOVERY = 0.50
NOT_SMALLEST_SHARE = 0.5
SIGNIFICANCE = 0.05
DEMO_SECONDS = 12 * 60
TABLES_COMPARED = (layout.TABLE_FILES["csv"], layout.TABLE_FILES["paper_csv"])
PARAMETER_FAMILIES = ("parameter", "task_vector")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def group_mean(frame: pd.DataFrame, system: str, group: str) -> float:
    rows = frame[(frame.system == system) & (frame.group == group)]
    return float(rows.wer.mean()) if len(rows) else float("nan")


def selections(results: Path) -> dict[str, dict]:
    """Branch id ("ties/density=0.2") -> its selection record."""
    root = Path(layout.folder(results, layout.SELECTION))
    return {str(path.relative_to(root).with_suffix("")): json.loads(path.read_text()) for path in sorted(root.rglob("*.json"))}


def merged_systems(frame: pd.DataFrame) -> list[str]:
    return sorted(s for s in frame.system.unique() if layout.split_system(s)[0] == layout.MERGED)


def relative_norms(results: Path, domains: list[str]) -> dict[str, float]:
    """‖τ_t‖ / ‖θ₀‖ per domain, over the tensors of the task vector."""
    with safe_open(Path(layout.path(results, layout.BASE_MODEL)) / layout.MODEL_WEIGHTS, "pt") as base:
        base_sq = {name: float(base.get_tensor(name).double().pow(2).sum()) for name in base.keys()}
    norms = {}
    for domain in domains:
        path = Path(layout.path(results, layout.TASK_VECTOR, domain=domain))
        if not path.is_file():
            continue
        with safe_open(path, "pt") as tv:
            tau_sq = sum(float(tv.get_tensor(name).double().pow(2).sum()) for name in tv.keys())
            theta_sq = sum(base_sq.get(name, 0.0) for name in tv.keys())
        norms[domain] = (tau_sq / theta_sq) ** 0.5
    return norms


def targets(results: Path, frame: pd.DataFrame, demo_seconds: float | None, same_as: Path | None) -> None:
    domains = sorted(frame[(frame.system == "base") & (frame.group == "ID")].test_set)
    zero_id, full_id = group_mean(frame, "base", "ID"), group_mean(frame, "joint", "ID")
    print(f"W1 zero-shot EP ID WER {pct(zero_id)} (target {pct(ID_RANGE[0])}–{pct(ID_RANGE[1])}) "
          f"{verdict(ID_RANGE[0] <= zero_id <= ID_RANGE[1])}")

    words = group_mean(frame, "base", "EP words")
    general = group_mean(frame, "base", "EP general")
    print(f"W2 zero-shot random EP words WER {pct(words)} (everyday EP sentences {pct(general)}; target <= "
          f"{pct(WORDS_MAX)}) {verdict(words <= WORDS_MAX)}")

    gains = {}
    for domain in domains:
        own = frame[(frame.system == f"finetuned/{domain}") & (frame.test_set == domain)]
        zero = frame[(frame.system == "base") & (frame.test_set == domain)]
        if len(own) and len(zero):
            gains[domain] = 1 - float(own.wer.iloc[0]) / float(zero.wer.iloc[0])
    met = sum(g >= OWN_DOMAIN_GAIN for g in gains.values())
    listing = ", ".join(f"{d} {100 * g:.0f}%" for d, g in gains.items())
    print(f"W3 own-domain gain of each ID-FT: {listing}; {met} of {len(domains)} >= {100 * OWN_DOMAIN_GAIN:.0f}% "
          f"{verdict(bool(domains) and met == len(domains))}")

    losses = {}
    for group in ("English", "Multilingual"):
        before, after = group_mean(frame, "base", group), group_mean(frame, "joint", group)
        if before == before:  # not NaN
            losses[group] = (before, after, after / before - 1)
    listing = ", ".join(f"{g} {pct(b)} -> {pct(a)} ({100 * r:+.0f}%)" for g, (b, a, r) in losses.items())
    print(f"W4 Full-FT forgetting: {listing} (target >= +{100 * FORGETTING:.0f}% on one) "
          f"{verdict(max((r for *_, r in losses.values()), default=0.0) >= FORGETTING)}")

    merged = {s: group_mean(frame, s, "ID") for s in merged_systems(frame)}
    if not merged:
        print("W5–W7: no merged systems in this run")
        return
    best, worst = min(merged, key=merged.get), max(merged, key=merged.get)
    recovered = (zero_id - merged[best]) / (zero_id - full_id) if zero_id != full_id else float("nan")
    print(f"W5 best merge {best} EP ID {pct(merged[best])}: recovers {pct(recovered)} of Full-FT's gain "
          f"(zero-shot {pct(zero_id)}, Full-FT {pct(full_id)}; target >= {pct(RECOVERY)}) {verdict(recovered >= RECOVERY)}")

    swept = {branch: record for branch, record in selections(results).items() if len(record.get("curve", [])) > 1}
    inner = [b for b, r in swept.items() if layout.chosen_lambda(r) > min(p["lambda"] for p in r["curve"])]
    listing = ", ".join(f"{b} λ={layout.chosen_lambda(swept[b]):g}" for b in swept)
    print(f"W6 chosen λ above the grid's smallest: {len(inner)} of {len(swept)} branches ({listing}) "
          f"{verdict(bool(swept) and len(inner) >= NOT_SMALLEST_SHARE * len(swept))}")

    scores = {s: Path(layout.path(results, layout.SCORES, system=s)) for s in (best, worst)}
    errors = load_utterance_errors(scores)
    pooled = {s: [errors[s][d][u] for d in domains for u in sorted(errors[s][d])] for s in scores}
    test = mapsswe(pooled[best], pooled[worst])
    print(f"W7 best {best} ({pct(merged[best])}) vs worst {worst} ({pct(merged[worst])}) on EP ID: MAPSSWE "
          f"p = {test.p_value:.2g} over {len(pooled[best])} utterances (target < {SIGNIFICANCE}) "
          f"{verdict(test.p_value < SIGNIFICANCE)}")

    parts = []
    ok = True
    if demo_seconds is not None:
        parts.append(f"make demo {demo_seconds / 60:.1f} min (target <= {DEMO_SECONDS / 60:.0f})")
        ok &= demo_seconds <= DEMO_SECONDS
    if same_as is not None:
        same = all(Path(layout.path(results, layout.TABLE, name=t)).read_bytes() == Path(layout.path(same_as, layout.TABLE, name=t)).read_bytes() for t in TABLES_COMPARED)
        parts.append(f"tables {'identical to' if same else 'DIFFERENT from'} {same_as}")
        ok &= same
    if parts:
        print(f"W8 {'; '.join(parts)} {verdict(ok)}")
    else:
        print("W8 not measured here: pass --demo-seconds and --same-as")
    stages = job_seconds(results)
    if stages:
        total = sum(seconds for _, seconds, _ in stages.values())
        total_cpu = sum(cpu for _, _, cpu in stages.values())
        listing = ", ".join(f"{stage} {seconds / 60:.1f} min ({jobs} jobs, {cpu / 60:.1f} CPU min)"
                            for stage, (jobs, seconds, cpu) in stages.items())
        print(f"   job time by stage (benchmarks/, {total / 60:.1f} min in all, {total_cpu / 60:.1f} CPU min; jobs run "
              f"side by side, and CPU time is what other work on the machine does not stretch): {listing}")


def job_seconds(results: Path) -> dict[str, tuple[int, float, float]]:
    """Stage ("models/finetuned", "hypotheses/merged", ...) -> (jobs, wall-clock seconds, CPU seconds, each summed
    over its jobs), from the per-job Snakemake benchmark files (asrmerge.report.results_page.read_jobs, which adds
    the CPU time of a job forked from the run's job server), largest wall-clock first."""
    stages: dict[str, list[tuple[float, float]]] = {}
    for job in read_jobs(results):
        parts = Path(job.path).parts
        stage = parts[0]
        if stage in ("models", "hypotheses"):  # models/base, models/finetuned, hypotheses/merged, ...
            stage = "/".join(parts[:2]) if len(parts) > 2 else f"{stage}/{Path(job.path).stem}"
        stages.setdefault(stage, []).append((job.seconds, job.cpu_seconds))
    totals = {stage: (len(jobs), sum(s for s, _ in jobs), sum(c for _, c in jobs)) for stage, jobs in stages.items()}
    return dict(sorted(totals.items(), key=lambda kv: -kv[1][1]))


def findings(results: Path, frame: pd.DataFrame) -> None:
    """The paper's findings, as this run measures them (printed whichever way they come out)."""
    print("\nFindings")
    domains = sorted(frame[(frame.system == "base") & (frame.group == "ID")].test_set)
    norms = relative_norms(results, domains)
    if norms:
        print("- task-vector size ‖τ_t‖/‖θ₀‖: " + ", ".join(f"{d} {n:.4f}" for d, n in norms.items()))
    families = frame.drop_duplicates("system").set_index("system").family
    merged = merged_systems(frame)

    def best_of(members: list[str], group: str) -> tuple[str, float] | None:
        values = {s: group_mean(frame, s, group) for s in members}
        return min(values.items(), key=lambda item: item[1]) if values else None

    subspace = [s for s in merged if families[s] == "subspace"]
    parameter = [s for s in merged if families[s] in PARAMETER_FAMILIES]
    for group, claim in (("ID", "subspace merges best in-domain"),
                         ("English", "parameter-space merges keep English best"),
                         ("Multilingual", "parameter-space merges keep the other languages best")):
        sub, par = best_of(subspace, group), best_of(parameter, group)
        if sub and par:
            winner = "subspace" if sub[1] < par[1] else "parameter/task-vector space"
            print(f"- {claim}: best subspace {sub[0]} {pct(sub[1])}, best parameter/task-vector {par[0]} "
                  f"{pct(par[1])} on {group} -> {winner} is lower")
    boosted = [s for s in merged if layout.split_system(s)[1] == "boosted_tsv_m"]
    plain = [s for s in merged if layout.split_system(s)[1] == "tsv_m"]
    if boosted and plain:
        b, p = best_of(boosted, "ID"), best_of(plain, "ID")
        print(f"- BoostedTSV-M vs TSV-M on EP ID: {b[0]} {pct(b[1])} vs {p[0]} {pct(p[1])}")
    ranks = {}
    for system in merged:
        _, method, params = layout.split_system(system)
        path = Path(layout.path(results, layout.MERGE_DIAGNOSTICS, branch=f"{method}/{params}"))
        if path.is_file():
            summary = json.loads(path.read_text()).get("summary", {})
            if "mean_merged_effective_rank" in summary:
                ranks[system] = (summary["mean_merged_effective_rank"], summary["mean_task_effective_rank"])
    for method in ("task_arithmetic", "tsv_m", "boosted_tsv_m", "iso_c"):
        shown = [(s, r) for s, r in ranks.items() if layout.split_system(s)[1] == method]
        for system, (merged_rank, task_rank) in shown[:1]:
            print(f"- effective rank of the merged τ, {system}: {merged_rank:.1f} (tasks' mean {task_rank:.1f})")
    long_form(results, frame, merged)


def long_form(results: Path, frame: pd.DataFrame, merged: list[str]) -> None:
    """The same sentences scored short-form (the source set) and long-form (its recordings, VAD-chunked)."""
    pairs = []
    for long_set in sorted(frame[frame.group == "Long-form"].test_set.unique()):
        with Path(layout.path(results, layout.MANIFEST, set=long_set)).open(encoding="utf-8") as rows:
            pairs.append((long_set, json.loads(rows.readline()).get("recordings_of")))
    best = sorted(merged, key=lambda s: group_mean(frame, s, "ID"))[:2]
    for long_set, short_set in pairs:
        cells = []
        for system in ["base", "joint", *best]:
            wer = frame[(frame.system == system) & (frame.test_set.isin([long_set, short_set]))].set_index("test_set").wer
            if long_set in wer and short_set in wer:
                cells.append(f"{system} {pct(wer[short_set])} -> {pct(wer[long_set])}")
        print(f"- short-form {short_set} vs long-form {long_set} (same sentences): " + "; ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results/demo", type=Path)
    parser.add_argument("--demo-seconds", type=float, help="wall clock of `make demo` from no results (W8)")
    parser.add_argument("--same-as", type=Path, help="results folder of a second run from scratch (W8)")
    args = parser.parse_args(argv)
    frame = pd.read_csv(layout.path(args.results, layout.TABLE, name=layout.TABLE_FILES["csv"]))
    targets(args.results, frame, args.demo_seconds, args.same_as)
    findings(args.results, frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
