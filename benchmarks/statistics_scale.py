"""RegMean's and Fisher's statistics at Whisper large-v3 size: memory and disk per domain, a path that fits, and what
each choice costs in merge quality on the demo.

    nohup nice -n 5 .venv/bin/python benchmarks/statistics_scale.py > .bench/statistics-scale.log 2>&1 &
    .venv/bin/python benchmarks/statistics_scale.py --write-doc      # its tables into docs/measured/scaling.md

Three parts, one results file (.bench/statistics-scale/results.json):
1. sizes: from the shapes of large-v3 (merge_speed.SCALES, transformers' WhisperConfig values) and the layers that
   `asrmerge statistics` covers (asrmerge.training.statistics.linear_weights): the Gram accumulators (float64, plus
   the float32 copies made when they are written), the Fisher accumulators (float32, one per parameter, beside the
   model and its gradients), and the file of one domain in float32, bfloat16 and float16, for each layer selection
   of LAYER_SELECTIONS.
2. measured: the gram statistics code itself (gram_statistics, with its forward hooks) on this CPU at large-v3
   width (d_model 1280, FFN 5120, 128 mel bins, a 30 s window) with --layers encoder and decoder layers of random
   weights, on --utterances synthetic recordings: seconds per layer and utterance, peak resident memory, and the
   accumulator bytes per layer, which scale the rest to 32 + 32 layers.
3. quality on the demo (--results, the demo run's folder): RegMean merged again from the run's task vectors with its
   Gram statistics stored in bfloat16 and float16, and with the selections of LAYER_SELECTIONS (layers outside take
   the mean of τ, as RegMean does for weights without statistics), decoded at the run's chosen λ on every in-domain
   test set (greedy: QUALITY_DECODING), WER against the float32 statistics.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check  # noqa: E402  (synthetic recordings)
import merge_speed as ms  # noqa: E402

from asrmerge import layout  # noqa: E402
from asrmerge.atomic import write_json, write_section  # noqa: E402
from asrmerge.layout import HYPOTHESIS_FILE  # noqa: E402

ROOT = ms.ROOT
WORK = ROOT / ".bench" / "statistics-scale"
DOC_PAGE = ROOT / "docs" / "measured" / "scaling.md"
DOC_MARKERS = ("<!-- statistics:begin -->", "<!-- statistics:end -->")
SIZE = "large-v3"
#: Layer selections (regexes of weight names, config `statistics.layers`; empty: every linear layer).
LAYER_SELECTIONS: dict[str, tuple[str, ...]] = {
    "all linear layers": (),
    "all but fc2": (r"_proj\.weight$", r"fc1\.weight$"),
    "attention only": (r"_proj\.weight$",),
}
STORAGE = ("float32", "bfloat16", "float16")
#: The layer selections whose merge quality is measured on the demo (beside every storage precision of all layers).
QUALITY_SELECTIONS = ("all but fc2",)
#: Decoding of the quality part: greedy, the same for every variant (the comparison is between statistics, and the
#: run's own 5-beam decoding of every variant would take most of an hour on 2 shared cores).
QUALITY_DECODING = ("num_beams=1",)
BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3


def large_v3_linear_inputs() -> dict[str, int]:
    """Weight name -> input width of every linear layer `asrmerge statistics` keeps a Gram matrix for, at large-v3."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**ms.SCALES[SIZE]))
    own = {name for name, _ in model.named_parameters()}
    return {f"{m}.weight": module.in_features for m, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and f"{m}.weight" in own}


def selected(names: dict[str, int], patterns: tuple[str, ...]) -> dict[str, int]:
    return {n: w for n, w in names.items() if not patterns or any(re.search(p, n) for p in patterns)}


def sizes() -> dict[str, Any]:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    inputs = large_v3_linear_inputs()
    with torch.device("meta"):
        parameters = sum(p.numel() for p in WhisperForConditionalGeneration(WhisperConfig(**ms.SCALES[SIZE])).parameters())
    rows = []
    for label, patterns in LAYER_SELECTIONS.items():
        entries = sum(w * w for w in selected(inputs, patterns).values())
        rows.append({"selection": label, "layers": len(selected(inputs, patterns)), "entries": entries,
                     "accumulators_gib": entries * BYTES["float64"] / GIB,
                     "peak_at_write_gib": entries * (BYTES["float64"] + BYTES["float32"]) / GIB,
                     "disk_gib": {dtype: entries * BYTES[dtype] / GIB for dtype in STORAGE}})
    fisher = {"parameters": parameters, "accumulators_gib": parameters * 4 / GIB,
              "model_and_gradients_gib": parameters * 8 / GIB,
              "disk_gib": {dtype: parameters * BYTES[dtype] / GIB for dtype in STORAGE}}
    return {"gram": rows, "fisher": fisher}


def measure_gram(layers: int, utterances: int, seed: int) -> dict[str, Any]:
    """gram_statistics at large-v3 width with `layers` encoder and decoder layers (random weights) on this CPU."""
    import torch

    from asrmerge.models.whisper import LoadedWhisper, build_small_whisper, feature_extractor_for, train_tokenizer
    from asrmerge.training.statistics import StatisticsOptions, gram_statistics, linear_weights

    geometry = ms.SCALES[SIZE]
    with tempfile.TemporaryDirectory() as scratch:
        recordings = gpu_check.synthetic_utterances(Path(scratch), seed)[:utterances]
        tokenizer = train_tokenizer([u.text for u in recordings] * 4, ["en"], vocab_size=200)
        architecture = dict(num_mel_bins=geometry["num_mel_bins"], d_model=geometry["d_model"], encoder_layers=layers,
                            decoder_layers=layers, attention_heads=geometry["encoder_attention_heads"],
                            ffn_dim=geometry["encoder_ffn_dim"], max_target_positions=geometry["max_target_positions"])
        model = build_small_whisper(tokenizer, architecture, audio_seconds=30, seed=seed)
        whisper = LoadedWhisper(model.eval(), feature_extractor_for(geometry["num_mel_bins"], 30), tokenizer)
        covered = linear_weights(whisper)
        entries = sum(m.in_features ** 2 for m in covered.values())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        options = StatisticsOptions(utterances=utterances, batch_size=1, max_memory_mb=1e9)
        start = time.perf_counter()
        grams = gram_statistics(whisper, recordings, options, torch.device("cpu"))
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert set(grams) == set(covered)
    return {"layers": layers, "utterances": utterances, "linear_weights": len(covered), "entries": entries,
            "seconds": seconds, "seconds_per_layer_utterance": seconds / (2 * layers) / utterances,
            "peak_rss_gib": peak / GIB, "rss_before_gib": before / GIB,
            "accumulator_gib": entries * BYTES["float64"] / GIB}


# ------------------------------------------------------------------------------------------------------ demo quality


def _variant(source_dir: Path, target_dir: Path, dtype: str, patterns: tuple[str, ...]) -> list[Path]:
    """Every domain's gram file of the demo, stored in `dtype` and narrowed to `patterns`, metadata kept."""
    import torch

    from asrmerge.merging.checkpoint import open_checkpoint, save_tensors

    paths = []
    for source in sorted(source_dir.glob("*/gram.safetensors")):
        with open_checkpoint(source) as ckpt:
            names = [n for n in ckpt.names if not patterns or any(re.search(p, n) for p in patterns)]
            tensors = {n: ckpt.get_float(n).to(getattr(torch, dtype)) for n in names}
            metadata = dict(ckpt.metadata)
        paths.append(save_tensors(target_dir / f"{source.parent.name}.gram.safetensors", tensors, metadata))
    return paths


def _asrmerge(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("asrmerge")), *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def demo_quality(results: Path, work_dir: Path) -> list[dict[str, Any]]:
    """RegMean of the demo with each statistics variant, decoded at the run's chosen λ on the in-domain test sets
    (in a scratch folder under `work_dir`, removed after)."""
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        return _quality_rows(results, Path(scratch))


def _quality_rows(results: Path, work: Path) -> list[dict[str, Any]]:
    from asrmerge.evaluation.scoring import score_hypotheses

    base, statistics = layout.path(results, layout.BASE_MODEL), results / "statistics"
    domains = sorted(p.parent.name for p in statistics.glob("*/gram.safetensors"))
    task_vectors = [layout.path(results, layout.TASK_VECTOR, domain=d) for d in domains]
    selection = layout.path(results, layout.SELECTION, branch="regmean/default")
    test_sets = [f"{d}={layout.path(results, layout.MANIFEST, set=d)}" for d in domains]
    variants = [("float32", "all linear layers")] + [(dtype, "all linear layers") for dtype in STORAGE[1:]] + \
               [("float32", label) for label in QUALITY_SELECTIONS]
    rows = []
    for dtype, label in variants:
        folder = work / f"{dtype}-{re.sub(r'[^a-z0-9]+', '_', label)}"
        files = _variant(statistics, folder / "statistics", dtype, LAYER_SELECTIONS[label])
        merged = folder / "regmean.safetensors"
        _asrmerge("merge", "--method", "regmean", "--base", str(base), "--task-vectors", *map(str, task_vectors),
                  "--statistics", *map(str, files), "--out", str(merged))
        hypotheses = folder / "hypotheses"
        _asrmerge("decode", "--model", str(base), "--task-vector", str(merged), "--selection", str(selection),
                  "--out-dir", str(hypotheses), *[a for t in test_sets for a in ("--test-set", t)],
                  *[a for option in QUALITY_DECODING for a in ("--option", option)])
        total, _ = score_hypotheses(row for d in domains
                                    for row in map(json.loads, (hypotheses / HYPOTHESIS_FILE.format(test_set=d)).read_text().splitlines()))
        rows.append({"storage": dtype, "selection": label, "files_mb": sum(f.stat().st_size for f in files) / 1e6,
                     "wer": total.wer, "words": total.reference_words, "domains": len(domains)})
        print(f"  {dtype}, {label}: WER {100 * total.wer:.2f} %", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------------ output


def render(results: dict[str, Any]) -> str:
    def started(record: dict[str, Any]) -> str:
        load = record["load_average"]
        return record["date"] + (" (load average not recorded)" if load is None else
                                 f" (load average {load:.1f} at its start)")

    when = "; ".join(f"{part} {started(record)}" for part, record in results.get("when", {}).items())
    out = [f"From `benchmarks/statistics_scale.py`, {results['machine']}" + (f"; {when}" if when else "") + ".", ""]
    fisher = results["sizes"]["fisher"]
    out += [f"**Sizes at large-v3** (from its shapes; per domain): Gram statistics keep one (in × in) matrix per linear "
            "layer, accumulated in float64 and copied to float32 when written; Fisher keeps one float32 value per "
            f"parameter ({fisher['parameters'] / 1e9:.2f} B parameters: {fisher['accumulators_gib']:.1f} GiB of "
            f"accumulators beside {fisher['model_and_gradients_gib']:.1f} GiB of float32 weights and gradients; on "
            f"disk {fisher['disk_gib']['float32']:.1f} GiB in float32, {fisher['disk_gib']['bfloat16']:.1f} GiB in "
            "bfloat16).", "",
            "| Gram layers | linear layers | accumulators (float64) | peak while writing | file float32 | bfloat16 | float16 |",
            "|---|---|---|---|---|---|---|"]
    for row in results["sizes"]["gram"]:
        disk = row["disk_gib"]
        out.append(f"| {row['selection']} | {row['layers']} | {row['accumulators_gib']:.1f} GiB | "
                   f"{row['peak_at_write_gib']:.1f} GiB | {disk['float32']:.2f} GiB | {disk['bfloat16']:.2f} GiB | "
                   f"{disk['float16']:.2f} GiB |")
    asked = gpu_check.slurm_resources("statistics")["mem_mb"] * 2**20 / GIB
    model = fisher["parameters"] * 4 / GIB
    out.append("")
    for row in results["sizes"]["gram"]:
        host = model + row["disk_gib"]["float32"]
        out.append(f"- {row['selection']}: on a GPU the accumulators peak at {row['peak_at_write_gib']:.1f} GiB of "
                   f"device memory; on the host the float32 model ({model:.1f} GiB) and the float32 copies brought "
                   f"back ({row['disk_gib']['float32']:.1f} GiB) need {host:.1f} GiB, "
                   f"{'within' if host <= asked else 'beyond'} the {asked:.1f} GiB the SLURM profile's `statistics` "
                   "rule asks for.")
    measured = results.get("measured")
    if measured:
        full = results["sizes"]["gram"][0]
        out += ["", f"**Measured** (`gram_statistics`, this CPU, large-v3 width, {measured['layers']} + "
                f"{measured['layers']} layers of random weights, {measured['utterances']} synthetic 2–4 s recordings "
                f"in the 30 s window, batch 1): {measured['seconds']:.1f} s, "
                f"{measured['seconds_per_layer_utterance']:.2f} s per layer and utterance; peak resident memory "
                f"{measured['peak_rss_gib']:.2f} GiB ({measured['rss_before_gib']:.2f} GiB before: model, tokenizer, "
                f"interpreter) for {measured['accumulator_gib']:.2f} GiB of float64 accumulators over "
                f"{measured['linear_weights']} linear weights. Scaled to 32 + 32 layers: "
                f"{measured['seconds_per_layer_utterance'] * 64:.0f} s per utterance on this CPU, and "
                f"{full['accumulators_gib']:.1f} GiB of accumulators."]
    quality = results.get("quality")
    if quality:
        reference = quality[0]["wer"]
        out += ["", f"**Cost in merge quality on the demo** (RegMean of the demo's {quality[0]['domains']} "
                "domains merged again from the run's task vectors and statistics, decoded at the run's chosen λ on the "
                f"in-domain test sets with {', '.join(QUALITY_DECODING)}, {quality[0]['words']} reference words):", "",
                "| statistics stored as | layers with statistics | files (all domains) | WER | Δ WER vs float32, all layers |",
                "|---|---|---|---|---|"]
        for row in quality:
            out.append(f"| {row['storage']} | {row['selection']} | {row['files_mb']:.1f} MB | {100 * row['wer']:.2f} % | "
                       f"{100 * (row['wer'] - reference):+.2f} points |")
    return "\n".join(out) + "\n"


def write_doc(results: dict[str, Any], page: Path) -> None:
    write_section(page, DOC_MARKERS, render(results))


def load_results(path: Path) -> dict[str, Any]:
    """The results file; one written with a single date for every part gets it as each part's date."""
    results = json.loads(path.read_text())
    if "date" in results:
        date = results.pop("date")
        results["when"] = {part: {"date": date, "load_average": None} for part in ("sizes", "measured", "quality")
                           if part in results}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers of the measured model")
    parser.add_argument("--utterances", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "demo", help="the demo run's folder")
    parser.add_argument("--parts", default="sizes,measured,quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=WORK)
    parser.add_argument("--write-doc", action="store_true", help=f"write the tables into {DOC_PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    path = args.work_dir / "results.json"
    if args.write_doc:
        write_doc(load_results(path), DOC_PAGE)
        return
    parts = set(args.parts.split(","))
    results = load_results(path) if path.is_file() else {}
    results["machine"] = ms.machine()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    measure = {"sizes": sizes, "measured": lambda: measure_gram(args.layers, args.utterances, args.seed),
               "quality": lambda: demo_quality(args.results, args.work_dir)}
    for part, run in measure.items():
        if part in parts:
            started = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "load_average": os.getloadavg()[0]}
            results[part] = run()
            results.setdefault("when", {})[part] = started
            write_json(path, results)
    print(render(results))


if __name__ == "__main__":
    main()
