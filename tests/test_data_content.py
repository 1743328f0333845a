"""Data content checks (asrmerge.data.content through validate_manifest, which the corpus stage and
`asrmerge validate-manifest` share), generated: every kind of corrupted row gives one error naming its row before
anything is imported, and sound rows pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrmerge.cli import main
from asrmerge.data.manifest import validate_manifest

RATE = 16000
WORDS = "o tempo amanhã vai estar nublado com aguaceiros fracos no norte".split()
CORRUPTIONS = ("nan_sample", "inf_sample", "float_beyond_full_scale", "too_short_for_its_words", "no_words",
               "zero_width_space", "test_audio_in_train", "test_audio_in_validation")


def _write(folder: Path, rows: list[dict], audio: dict[str, np.ndarray], subtype: str = "PCM_16") -> Path:
    for name, samples in audio.items():
        sf.write(str(folder / name), samples, RATE, subtype=subtype)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return manifest


def _sound_set(rng: np.random.Generator, size: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    rows, audio = [], {}
    for i in range(size):
        seconds = float(rng.uniform(1.5, 3.0))
        name = f"u{i}.wav"
        audio[name] = (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
        rows.append({"id": f"u{i}", "audio": name, "text": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8)))),
                     "duration": round(len(audio[name]) / RATE, 4), "set": "mine",
                     "split": ["train", "validation", "test"][i % 3], "language": "pt"})
    return rows, audio


def _corrupt(kind: str, rows: list[dict], audio: dict[str, np.ndarray], victim: int) -> tuple[str, str]:
    """Apply one corruption to row `victim` (or a pair of rows); returns (subtype to write, id the error names)."""
    row = rows[victim]
    samples = audio[row["audio"]]
    if kind in ("nan_sample", "inf_sample"):
        samples[len(samples) // 2] = np.nan if kind == "nan_sample" else np.inf
        return "FLOAT", row["id"]
    if kind == "float_beyond_full_scale":
        audio[row["audio"]] = samples * 2000.0
        return "FLOAT", row["id"]
    if kind == "too_short_for_its_words":
        audio[row["audio"]] = samples[: int(0.05 * RATE)]
        row["duration"] = 0.05
        row["text"] = " ".join(WORDS[:10])
        return "PCM_16", row["id"]
    if kind == "no_words":
        row["text"] = "..."
        return "PCM_16", row["id"]
    if kind == "zero_width_space":
        row["text"] = "\u200b"
        return "PCM_16", row["id"]
    test = next(r for r in rows if r["split"] == "test")
    tuned = next(r for r in rows if r["split"] == ("train" if kind == "test_audio_in_train" else "validation"))
    tuned["audio"] = test["audio"]
    tuned["duration"] = test["duration"]
    return "PCM_16", test["id"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(CORRUPTIONS), size=st.integers(3, 7), seed=st.integers(0, 2**16), victim=st.integers(0, 6))
def test_every_corrupted_row_is_refused_naming_it(tmp_path_factory, kind, size, seed, victim):
    folder = tmp_path_factory.mktemp("corrupt")
    rows, audio = _sound_set(np.random.default_rng(seed), size)
    subtype, named = _corrupt(kind, rows, audio, victim % size)
    manifest = _write(folder, rows, audio, subtype)
    with pytest.raises(ValueError) as raised:
        validate_manifest(manifest)
    assert named in str(raised.value) and str(manifest) in str(raised.value), (kind, str(raised.value))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(3, 7), seed=st.integers(0, 2**16))
def test_sound_sets_pass(tmp_path_factory, size, seed):
    folder = tmp_path_factory.mktemp("sound")
    rows, audio = _sound_set(np.random.default_rng(seed), size)
    assert [r.id for r in validate_manifest(_write(folder, rows, audio))] == [r["id"] for r in rows]


def test_validate_manifest_says_what_the_import_says(tmp_path, capsys):
    """The command runs the corpus stage's checks: an empty manifest and a corrupted one fail there too."""
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["validate-manifest", str(tmp_path / "empty.jsonl")]) == 2
    assert "has no rows" in capsys.readouterr().err
    rows, audio = _sound_set(np.random.default_rng(0), 3)
    rows[0]["text"] = "..."
    assert main(["validate-manifest", str(_write(tmp_path, rows, audio))]) == 2
    assert "u0" in capsys.readouterr().err


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), tuned_split=st.sampled_from(["train", "validation"]), leak=st.booleans())
def test_a_recording_shared_across_sets_between_tuning_and_test_is_refused(tmp_path_factory, seed, tuned_split, leak):
    """check_splits (the workflow's rule before training and decoding) sees every set together: a test recording of
    one set copied under another name into a tuning split of another set is leakage; distinct recordings pass."""
    from asrmerge.data.content import check_splits

    root = tmp_path_factory.mktemp("sets")
    rng = np.random.default_rng(seed)
    manifests = {}
    for name in ("domain", "ood"):
        (root / name).mkdir()
        rows, audio = _sound_set(rng, 3)
        manifests[name] = _write(root / name, rows, audio)
    if leak:
        test_row = next(json.loads(line) for line in manifests["ood"].read_text().splitlines()
                        if json.loads(line)["split"] == "test")
        rows = [json.loads(line) for line in manifests["domain"].read_text().splitlines()]
        victim = next(row for row in rows if row["split"] == tuned_split)
        (root / "domain" / "copy.wav").write_bytes((root / "ood" / test_row["audio"]).read_bytes())
        victim.update(audio="copy.wav", duration=test_row["duration"])
        manifests["domain"].write_text("".join(json.dumps(row) + "\n" for row in rows))
        with pytest.raises(ValueError, match=f"row {victim['id']} of set domain .* row {test_row['id']} of set ood"):
            check_splits(manifests, root / "checked.json", root / "digests.json")
        assert not (root / "checked.json").exists()
    else:
        check_splits(manifests, root / "checked.json", root / "digests.json")
        assert json.loads((root / "checked.json").read_text())["recordings"] == 6
