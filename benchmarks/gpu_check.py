"""GPU check: the project's CUDA paths against the same computations on the CPU, in a few minutes, one table.

    make gpu-check                                   # on a GPU node (DEVICE=cuda)
    .venv/bin/python benchmarks/gpu_check.py --device cpu          # dry mode: every check, CPU against CPU
    .venv/bin/python benchmarks/gpu_check.py --write-doc           # a CUDA run's table into docs/gpu-check.md

Checks, each a row (seconds on the device, the difference from the CPU, the tolerance, pass or FAIL):
- merge: a few methods of every family (elementwise, trimming, random drop masks, SVD subspaces, RegMean with Gram
  statistics) on synthetic Whisper checkpoints (benchmarks/merge_speed.py's generator at --geometry, T fine-tunes),
  merged by the engine on the device and on the CPU; the maximum absolute difference of the merged task vectors
  relative to the largest |τ| of the CPU merge.
- train: TRAIN_STEPS steps of full fine-tuning with bf16 autocast and gradient checkpointing (asrmerge.training.loop
  .train, the workflow's trainer) of a small Whisper on synthetic audio; the losses against the float32 CPU run (bf16
  rounds the activations: a relative tolerance of a few percent), every weight finite.
- statistics: gram and fisher statistics (asrmerge.training.statistics) of that model on the device and on the CPU.
- decode: batched beam search (asrmerge.evaluation.decoding.transcribe) of the synthetic utterances; the transcripts
  must equal the CPU's.
- slurm: the resources profiles/slurm/config.yaml asks for the `statistics` rule against what the statistics step
  used here (host memory, device memory, minutes).
With --device cpu (the dry mode, run by the test suite so that the check cannot rot) the "device" is the CPU itself:
the differences are then zero by construction, and the check proves the code paths run, not that CUDA is right.
Results: .bench/gpu-check/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_scaling  # noqa: E402
import merge_speed as ms  # noqa: E402

from asrmerge.atomic import write_json, write_section, write_text  # noqa: E402

ROOT = ms.ROOT
WORK = ROOT / ".bench" / "gpu-check"
DOC_PAGE = ROOT / "docs" / "gpu-check.md"
DOC_MARKERS = ("<!-- gpu-check:begin -->", "<!-- gpu-check:end -->")
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
SLURM_RULE = "statistics"
#: Methods merged on both devices, with their parameters: one of each kind of computation the engine sends there.
MERGES: dict[str, dict[str, Any]] = {
    "task_arithmetic": {},
    "ties": {"density": 0.2},
    "dare": {"p": 0.9},
    "tsv_m": {},
    "iso_c": {},
    "regmean": {},
}
#: Tolerances, relative to the largest magnitude of the CPU result: float32 reductions in another order (merges,
#: statistics), bf16 autocast against float32 (training losses).
MERGE_TOLERANCE, STATISTICS_TOLERANCE, LOSS_TOLERANCE = 1e-4, 1e-3, 5e-2
TRAIN_STEPS = 4
#: The small Whisper trained and decoded (asrmerge.models.whisper.build_small_whisper's architecture keys).
ARCHITECTURE = dict(num_mel_bins=80, d_model=128, encoder_layers=2, decoder_layers=2, attention_heads=4, ffn_dim=512,
                    max_target_positions=64)
AUDIO_SECONDS, UTTERANCES = 6, 8
WORDS = ("north wind sun strong cold traveller cloak warm light river stone early market bread window quiet "
         "morning green").split()


def synthetic_utterances(folder: Path, seed: int):
    """UTTERANCES seeded recordings (tones with noise, 2–4 s) with texts from WORDS, written as WAV files."""
    import numpy as np
    import soundfile as sf

    from asrmerge.data.manifest import Utterance
    from asrmerge.defaults import default

    sample_rate = default("corpus.sample_rate")
    rng = np.random.default_rng(seed)
    utterances = []
    for index in range(UTTERANCES):
        seconds = float(rng.uniform(2, 4))
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        audio = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(150, 1200, size=3)) / 3
        audio = (0.3 * audio + 0.02 * rng.standard_normal(t.size)).astype("float32")
        path = folder / f"utt{index:02d}.wav"
        sf.write(str(path), audio, sample_rate)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 7))))
        utterances.append(Utterance(id=f"utt{index:02d}", audio=path, text=text, duration=seconds, set="check",
                                    split="train", language="en"))
    return utterances


def small_whisper(utterances, seed: int):
    from asrmerge.models.whisper import LoadedWhisper, build_small_whisper, feature_extractor_for, train_tokenizer

    tokenizer = train_tokenizer([u.text for u in utterances] * 4, ["en"], vocab_size=200)
    model = build_small_whisper(tokenizer, ARCHITECTURE, audio_seconds=AUDIO_SECONDS, seed=seed)
    return LoadedWhisper(model.eval(), feature_extractor_for(ARCHITECTURE["num_mel_bins"], AUDIO_SECONDS), tokenizer)


def relative_difference(reference: dict[str, Any], other: dict[str, Any]) -> float:
    """max |reference − other| over every tensor, divided by max |reference| (both dicts of tensors, same keys)."""
    import torch

    if set(reference) != set(other):
        raise ValueError(f"different tensors: {sorted(set(reference) ^ set(other))[:3]}")
    worst = max((float((reference[k].float() - other[k].float().cpu()).abs().max()) for k in reference
                 if reference[k].numel()), default=0.0)
    scale = max((float(t.float().abs().max()) for t in reference.values() if t.numel()), default=0.0)
    if not all(bool(torch.isfinite(t).all()) for t in other.values()):
        return float("inf")
    return worst / scale if scale else worst


def _tensors(path: Path) -> dict[str, Any]:
    from asrmerge.merging.checkpoint import open_checkpoint

    with open_checkpoint(path) as ckpt:
        return {name: ckpt.get_float(name, check_finite=False) for name in ckpt.float_names}


class Checks:
    """The rows of the table, each timed on the device."""

    def __init__(self, device: str):
        self.device = device
        self.rows: list[dict[str, Any]] = []

    def roles(self) -> tuple[tuple[str, str], ...]:
        """(role, device) of the two runs of every check: the CPU reference, then the device checked."""
        return ("reference", "cpu"), ("checked", self.device)

    def timed(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """function(*args, **kwargs) and its seconds, the device synchronised before and after."""
        synchronize()
        start = time.perf_counter()
        value = function(*args, **kwargs)
        synchronize()
        return value, time.perf_counter() - start

    def add(self, check: str, seconds: float, difference: float | None, tolerance: float | None, detail: str,
            passed: bool | None = None) -> None:
        if passed is None:
            passed = difference is not None and tolerance is not None and difference <= tolerance
        self.rows.append({"check": check, "seconds": seconds, "difference": difference, "tolerance": tolerance,
                          "detail": detail, "passed": bool(passed)})
        shown = "–" if difference is None else f"{difference:.2e}"
        print(f"  {check}: {'pass' if passed else 'FAIL'} ({seconds:.2f} s, difference {shown}; {detail})", flush=True)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_merges(checks: Checks, work: Path, geometry: str, tasks: int, seed: int) -> None:
    from asrmerge.merging.engine import merge

    base, finetuned = ms.build_checkpoints(work / f"{geometry}-T{tasks}", geometry, tasks, seed)
    statistics = merge_scaling.build_statistics(work / f"{geometry}-T{tasks}" / "statistics", base, finetuned, seed,
                                                "float32")
    for method, params in MERGES.items():
        outputs = {}
        for role, device in checks.roles():
            out = work / f"merge-{method}-{role}.safetensors"
            extra = {"statistics": statistics} if method == "regmean" else {}
            _, seconds = checks.timed(merge, base, finetuned=finetuned, method=method, params=params, out_path=out,
                                      seed=seed, device=device, **extra)
            outputs[role] = _tensors(out)
        checks.add(f"merge {method}", seconds, relative_difference(outputs["reference"], outputs["checked"]),
                   MERGE_TOLERANCE, f"{geometry} geometry, T={tasks}; max abs Δ / max abs τ")


def check_training(checks: Checks, work: Path, whisper_factory: Callable[[], Any], utterances) -> Any:
    """Trains on both devices; returns the device's trained model (for the statistics and decoding checks)."""
    import torch

    from asrmerge.training.loop import TrainingOptions, train

    options = TrainingOptions(steps=TRAIN_STEPS, learning_rate=1e-3, batch_size=4, gradient_accumulation=1,
                              warmup_steps=0, precision="bf16", gradient_checkpointing=True, checkpoint_every=1000,
                              ctc_weight=0.0, mode="full", replay_fraction=0.0, seed=0)
    curves, models = {}, {}
    for role, device in checks.roles():
        whisper = whisper_factory()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        curves[role], seconds = checks.timed(train, whisper, utterances, options, work / f"train-{role}",
                                               torch.device(device))
        models[role] = whisper
    losses = {d: [row["loss"] for row in c] for d, c in curves.items()}
    reference = max(abs(v) for v in losses["reference"])
    difference = max(abs(a - b) for a, b in zip(losses["reference"], losses["checked"])) / reference
    finite = all(bool(torch.isfinite(p).all()) for p in models["checked"].model.parameters())
    memory = f", {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB on the GPU" if torch.cuda.is_available() else ""
    checks.add(f"train {TRAIN_STEPS} steps (bf16, gradient checkpointing)", seconds, difference, LOSS_TOLERANCE,
               f"losses {', '.join(f'{v:.3f}' for v in losses['checked'])} against CPU float32 "
               f"{', '.join(f'{v:.3f}' for v in losses['reference'])}{memory}" + ("" if finite else "; NON-FINITE WEIGHTS"),
               passed=difference <= LOSS_TOLERANCE and finite)
    return models["checked"]


def check_statistics(checks: Checks, whisper, utterances) -> dict[str, float]:
    """Returns what the statistics step used on the device (for the SLURM row)."""
    import torch

    from asrmerge.training.statistics import COMPUTE, StatisticsOptions

    options = StatisticsOptions(utterances=len(utterances), batch_size=4)
    used = {"seconds": 0.0, "device_mib": 0.0}
    for kind, compute in COMPUTE.items():
        results = {}
        for role, device in checks.roles():
            whisper.model.to(device)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            results[role], seconds = checks.timed(compute, whisper, utterances, options, torch.device(device))
        used["seconds"] += seconds
        if torch.cuda.is_available():
            used["device_mib"] = max(used["device_mib"], torch.cuda.max_memory_allocated() / 2**20)
        checks.add(f"statistics {kind}", seconds, relative_difference(results["reference"], results["checked"]),
                   STATISTICS_TOLERANCE, f"{len(results['reference'])} tensors over {len(utterances)} utterances")
    return used


def check_decoding(checks: Checks, whisper, utterances) -> None:
    import torch

    from asrmerge.evaluation.decoding import DecodingOptions, transcribe

    options = DecodingOptions(batch_size=4, max_new_tokens=24, num_beams=3, long_form="reject")
    texts = {}
    for role, device in checks.roles():
        whisper.model.to(device)
        rows, seconds = checks.timed(transcribe, whisper, utterances, options, torch.device(device), progress=False)
        texts[role] = [row["hypothesis"] for row in rows]
    same = sum(a == b for a, b in zip(texts["reference"], texts["checked"]))
    checks.add("decode (batch 4, 3 beams)", seconds, None, None,
               f"{same}/{len(utterances)} transcripts identical to the CPU's", passed=same == len(utterances))


def slurm_resources(rule: str, profile: Path = PROFILE) -> dict[str, Any]:
    """The resources the SLURM profile gives `rule`: its default-resources, overridden by its set-resources entry."""
    import yaml

    config = yaml.safe_load(profile.read_text())
    entry = config.get("set-resources", {}).get(rule)
    if entry is None:
        raise ValueError(f"{profile}: no set-resources entry for rule {rule!r}")
    return {**config.get("default-resources", {}), **entry}


def check_slurm(checks: Checks, used: dict[str, float]) -> None:
    asked = slurm_resources(SLURM_RULE)
    host_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fits = host_mib <= asked["mem_mb"] and used["seconds"] / 60 <= asked["runtime"]
    gpu = f"gpu {asked.get('gpu', 0)}, " if asked.get("gpu") else "no GPU, "
    checks.add(f"slurm rule `{SLURM_RULE}` resources", 0.0, None, None,
               f"asks {gpu}mem_mb {asked['mem_mb']}, runtime {asked['runtime']} min; this check's process peaked at "
               f"{host_mib:.0f} MiB host memory, {used['device_mib']:.0f} MiB device memory, statistics "
               f"{used['seconds']:.1f} s", passed=fits)


def render(results: dict[str, Any]) -> str:
    lines = [f"{results['machine']}; device {results['device']} ({results['device_name']}); torch {results['torch']}; "
             f"{results['date']}; {results['seconds']:.0f} s in all. "
             f"`{results['command']}`",
             "",
             "| check | seconds on the device | difference from CPU | tolerance | detail | result |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        difference = "–" if row["difference"] is None else f"{row['difference']:.2e}"
        tolerance = "–" if row["tolerance"] is None else f"{row['tolerance']:.0e}"
        lines.append(f"| {row['check']} | {row['seconds']:.2f} | {difference} | {tolerance} | {row['detail']} | "
                     f"{'pass' if row['passed'] else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


def write_doc(results: dict[str, Any], page: Path) -> None:
    """The table of a run on a GPU into `page`; a dry run's is refused (the page must not show CPU numbers as GPU
    results)."""
    if results["device"] == "cpu":
        raise ValueError("these results come from the dry mode (--device cpu): only a run on a GPU fills the page")
    write_section(page, DOC_MARKERS, render(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (cpu: the dry mode)")
    parser.add_argument("--geometry", choices=sorted(ms.SCALES), default="tiny",
                        help="Whisper geometry of the merged checkpoints (toy: seconds, for the dry mode)")
    parser.add_argument("--tasks", type=int, default=3, help="fine-tunes merged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=WORK)
    parser.add_argument("--write-doc", action="store_true",
                        help=f"check nothing: write the table of the results file into {DOC_PAGE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    results_path = args.work_dir / "results.json"
    if args.write_doc:
        write_doc(json.loads(results_path.read_text()), DOC_PAGE)
        return 0
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here (the dry mode is --device cpu)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    checks = Checks(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as scratch:
        work = Path(scratch)
        check_merges(checks, args.work_dir, args.geometry, args.tasks, args.seed)
        audio = work / "audio"
        audio.mkdir()
        utterances = synthetic_utterances(audio, args.seed)
        trained = check_training(checks, work, lambda: small_whisper(utterances, args.seed), utterances)
        used = check_statistics(checks, trained, utterances)
        check_decoding(checks, trained, utterances)
        check_slurm(checks, used)
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    results = {"machine": ms.machine(), "device": args.device, "device_name": device_name, "torch": torch.__version__,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "seconds": time.perf_counter() - start, "rows": checks.rows,
               "command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])}
    write_json(results_path, results)
    text = render(results)
    write_text(args.work_dir / "results.md", text)
    print()
    print(text)
    failed = [row["check"] for row in checks.rows if not row["passed"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
