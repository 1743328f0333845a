"""Generation configs true to their tokenizer for every kind of checkpoint, hypotheses cut at the token cap or caught
in a loop flagged (hypothesis file, score file, tables, log), and a missing local model folder reported at once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.evaluation.hypotheses import FLAGS, REPETITION, TOKEN_CAP, flag_counts, hypothesis_flags, repeats_itself
from asrmerge.models.source import is_hub_id
from asrmerge.models.whisper import (
    TIMESTAMP_TOKEN, complete_generation_config, generation_config_problems, in_whisper_token_order, language_tokens,
    load_whisper, suppressed_token_ids, timestamp_token_ids, token_cap,
)
from speech_world import build_tiny_corpus, build_tiny_whisper

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def with_timestamps(whisper, count: int = 51):
    """The model in Whisper's token order with `count` timestamp tokens after <|notimestamps|>, as released
    checkpoints have them (1501 there)."""
    whisper, _ = in_whisper_token_order(whisper)
    whisper.tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(count)], special_tokens=True)
    whisper.model.resize_token_embeddings(len(whisper.tokenizer))
    return whisper


def kinds(tmp_path: Path) -> dict:
    """One model of each kind: the demo's foundation, a multilingual Whisper-like one with timestamps, an
    English-only one (one language token) with timestamps."""
    manifest = build_tiny_corpus(tmp_path / "weather")
    english = build_tiny_whisper(manifest)
    vocabulary = english.tokenizer.get_vocab()
    assert "<|en|>" in vocabulary
    return {"foundation": load_whisper(ROOT / "assets" / "foundation"),
            "multilingual": with_timestamps(build_tiny_whisper(manifest)),
            "english-only": with_timestamps(english)}


@pytest.mark.parametrize("language", [None, "pt"])
def test_every_kind_reads_back_languages_as_languages_and_timestamps_as_timestamps(tmp_path, language):
    for kind, whisper in kinds(tmp_path).items():
        complete_generation_config(whisper, language, num_beams=1)
        whisper.save(tmp_path / kind)
        again = load_whisper(tmp_path / kind)
        config, vocabulary = again.model.generation_config, again.tokenizer.get_vocab()
        assert generation_config_problems(again) == [], kind
        assert config.lang_to_id == {t: vocabulary[t] for t in language_tokens(again.tokenizer)}, kind
        assert not any(TIMESTAMP_TOKEN.match(t) for t in config.lang_to_id), kind
        assert not set(timestamp_token_ids(again.tokenizer)) & set(config.suppress_tokens), kind
        assert again.eot_id not in config.suppress_tokens
        assert config.no_timestamps_token_id == vocabulary["<|notimestamps|>"]
        assert config.max_new_tokens == again.model.config.max_target_positions - 4
        assert config.language == language and config.task == "transcribe"
        if kind != "foundation":
            assert timestamp_token_ids(again.tokenizer)[0] == config.no_timestamps_token_id + 1


def test_a_wrong_generation_config_is_repaired_or_refused(tmp_path):
    """The config written before this check (every <|...|> token a language, timestamps suppressed) is rebuilt from
    the tokenizer by complete_generation_config, and refused when saved as it is."""
    whisper = kinds(tmp_path)["multilingual"]
    complete_generation_config(whisper, "pt", num_beams=1)
    config = whisper.model.generation_config
    timestamps = timestamp_token_ids(whisper.tokenizer)
    config.lang_to_id = {**config.lang_to_id, "<|0.02|>": timestamps[1]}
    config.suppress_tokens = sorted(set(config.suppress_tokens) | set(timestamps))
    problems = generation_config_problems(whisper)
    assert any("lang_to_id" in p for p in problems) and any("suppress_tokens holds <|" in p for p in problems)
    with pytest.raises(ValueError, match="generation config contradicts the tokenizer"):
        whisper.save(tmp_path / "wrong")
    complete_generation_config(whisper, "pt", num_beams=1)
    assert generation_config_problems(whisper) == []
    assert not set(timestamps) & set(suppressed_token_ids(whisper))


def test_token_cap_follows_the_model(tmp_path):
    whisper = load_whisper(ROOT / "assets" / "foundation")
    assert token_cap(whisper) == whisper.model.config.max_target_positions - 4
    assert token_cap(whisper, 7) == 7
    for bad in (0, -3, 2.5, True, "many", whisper.model.config.max_target_positions):
        with pytest.raises(ValueError, match="max_new_tokens"):
            token_cap(whisper, bad)


def test_loops_are_recognised_and_speech_is_not():
    rng = np.random.default_rng(0)
    words = "o tempo amanhã vai estar nublado com aguaceiros fracos no norte e sol no sul".split()
    for _ in range(200):  # ordinary sentences: no flag
        sentence = " ".join(rng.choice(words, size=rng.integers(3, 30)))
        if not repeats_itself(sentence):
            assert hypothesis_flags(sentence, reached_cap=False) == []
    for _ in range(200):  # any stretch repeated back to back until it covers 20 characters or more: a loop
        unit = " ".join(rng.choice(words, size=rng.integers(1, 4))) + " "
        times = max(4, -(-20 // len(unit)))
        text = " ".join(rng.choice(words, size=rng.integers(0, 6))) + " " + unit * times
        assert repeats_itself(text), text
    assert repeats_itself("!" * 40) and not repeats_itself("!!!!") and not repeats_itself("sim sim sim")
    assert hypothesis_flags("!" * 40, reached_cap=True) == [TOKEN_CAP, REPETITION]
    assert flag_counts([{"flags": [TOKEN_CAP]}, {"flags": []}, {}]) == {TOKEN_CAP: 1, REPETITION: 0}
    assert FLAGS == (TOKEN_CAP, REPETITION)


def test_hypotheses_cut_at_the_cap_are_flagged_counted_tabled_and_logged(tmp_path, caplog):
    from asrmerge.data.manifest import read_manifest
    from asrmerge.evaluation.hypotheses import write_jsonl
    from asrmerge.report.tables import load_scores, paper_note
    from asrmerge.workflow.stages import score

    manifest = build_tiny_corpus(tmp_path / "weather")
    whisper = build_tiny_whisper(manifest, seed=3)
    with torch.no_grad():  # a random model that does not stop at once
        whisper.model.proj_out.weight.add_(torch.randn_like(whisper.model.proj_out.weight))
    utterances = read_manifest(manifest, split="test")
    rows = transcribe(whisper, utterances, DecodingOptions(max_new_tokens=3), CPU, progress=False)
    assert all(row["flags"][:1] == [TOKEN_CAP] for row in rows)  # nothing ends within 3 tokens
    write_jsonl(rows, tmp_path / "hyp.jsonl")
    with caplog.at_level(logging.WARNING):
        score({"weather": tmp_path / "hyp.jsonl"}, tmp_path / "base.json")
    assert f"{len(rows)} token cap of {len(rows)} hypotheses flagged" in caplog.text
    entry = json.loads((tmp_path / "base.json").read_text())["weather"]
    assert entry["flagged"][TOKEN_CAP] == len(rows) and set(entry["flagged_utterances"]) == {r["id"] for r in rows}
    frame = load_scores({"base": tmp_path / "base.json"}, {"weather": "domain"})
    note = paper_note(frame, None, False)
    assert f"Flagged hypotheses: {len(rows)} token cap" in note and "base on weather" in note
    assert "Full-FT was not run" in note  # no joint system among the scores


def test_a_missing_local_folder_is_never_looked_up_on_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert is_hub_id("openai/whisper-base") and is_hub_id("someone/my-whisper.v2")
    for local in ("models/ft", "ft", "./openai/whisper-base", "/abs/model", "~/model", "a/b/c", "models"):
        assert not is_hub_id(local), local
    with pytest.raises(FileNotFoundError, match="model folder models/ft does not exist"):
        load_whisper("models/ft")
