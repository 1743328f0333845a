"""Corpus builder: spec validation, determinism, split hygiene, default world, CLI functions."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from asrmerge.cli import main
from asrmerge.data.corpus import build_set, is_heldout_text, parse_spec
from asrmerge.data.manifest import read_manifest, validate_manifest
from asrmerge.data.recordings import is_recordings_spec, parse_recordings_spec
from asrmerge.data.text import EP_DOMAINS
from asrmerge.data.worlds import default_sets
from speech_world import micro_config_file

SMALL = {"train": 6, "validation": 2, "test": 4}


def _spec(**overrides: object) -> dict:
    spec = {
        "role": "domain", "language": "pt", "text": "weather", "voices": ["pt+m1", "pt+f3"],
        "rate": [150, 190], "pitch": [30, 60], "channel": [{"type": "noise", "snr_db": [10, 20]}],
        "sizes": dict(SMALL),
    }
    spec.update(overrides)
    return spec


def _digest(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_build_set_writes_valid_manifest_and_audio(tmp_path: Path) -> None:
    manifest = build_set("weather", _spec(), tmp_path / "weather", seed=1)
    assert manifest == tmp_path / "weather" / "manifest.jsonl"
    rows = validate_manifest(manifest)
    assert [sum(r.split == s for r in rows) for s in ("train", "validation", "test")] == [6, 2, 4]
    for row in rows:
        assert row.audio.parent == (tmp_path / "weather" / "audio" / row.split).resolve()
        assert row.language == "pt" and row.set == "weather" and row.variant is None
        assert 0.5 < row.duration <= 5.5
        info = sf.info(str(row.audio))
        assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.channels == 1
        assert row.extra["voice"] in ("pt+m1", "pt+f3") and 150 <= row.extra["rate"] <= 190
        assert 10 <= row.extra["channel"][0]["snr_db"] <= 20
    first = json.loads(manifest.read_text(encoding="utf-8").splitlines()[0])
    assert first["audio"] == f"audio/train/{first['id']}.wav"
    texts = [row.text for row in rows]
    assert len(set(texts)) == len(texts)


def test_build_set_is_byte_identical_for_the_same_config(tmp_path: Path) -> None:
    spec = _spec(channel=[{"type": "reverb", "rt60": [0.2, 0.4]}, {"type": "telephone"}])
    build_set("weather", spec, tmp_path / "a", seed=5)
    build_set("weather", copy.deepcopy(spec), tmp_path / "b", seed=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    build_set("weather", spec, tmp_path / "c", seed=6)
    assert _digest(tmp_path / "a")["manifest.jsonl"] != _digest(tmp_path / "c")["manifest.jsonl"]


def test_test_split_is_stable_when_train_grows_and_splits_do_not_overlap(tmp_path: Path) -> None:
    small = read_manifest(build_set("medical", _spec(text="medical"), tmp_path / "s", seed=0))
    bigger = _spec(text="medical", sizes={"train": 20, "validation": 2, "test": 4})
    large = read_manifest(build_set("medical", bigger, tmp_path / "l", seed=0))
    assert [r.text for r in small if r.split == "test"] == [r.text for r in large if r.split == "test"]
    by_split = {s: {r.text for r in large if r.split == s} for s in ("train", "validation", "test")}
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["validation"] & by_split["test"]


def test_rebuild_removes_stale_audio(tmp_path: Path) -> None:
    out = tmp_path / "set"
    build_set("weather", _spec(), out, seed=0)
    build_set("weather", _spec(sizes={"test": 2}), out, seed=0)
    assert sorted(p.name for p in out.rglob("*.wav")) == ["weather-test-00000.wav", "weather-test-00001.wav"]
    validate_manifest(out / "manifest.jsonl")


def test_mixed_language_set_with_voices_per_language(tmp_path: Path) -> None:
    spec = _spec(
        role="multilingual", language=["es", "fr", "pt-BR"], text="general",
        voices={"es": ["es+m1"], "fr": ["fr+f2"], "pt-BR": ["pt-br+m3"]}, channel=[], sizes={"test": 12},
    )
    rows = read_manifest(build_set("mix", spec, tmp_path, seed=2))
    seen = {(r.language, r.variant, r.extra["voice"]) for r in rows}
    assert seen <= {("es", None, "es+m1"), ("fr", None, "fr+f2"), ("pt", "pt-BR", "pt-br+m3")}
    assert len(seen) >= 2


def test_voice_list_is_split_by_language() -> None:
    parsed = parse_spec("mix", _spec(language=["en", "pt"], text="general", voices=["en+m1", "pt+f2", "en-us+f3"]))
    assert parsed.voices == {"en": ("en+m1", "en-us+f3"), "pt": ("pt+f2",)}


def test_max_duration_is_respected(tmp_path: Path) -> None:
    rows = read_manifest(build_set("legal", _spec(text="legal", rate=140, max_duration=3.5, sizes={"test": 6}), tmp_path, seed=0))
    assert all(row.duration <= 3.5 for row in rows)


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"role": "teacher"}, "role", "unknown role"),
        ({"language": "tlh"}, "language", "Whisper"),
        ({"text": "poetry"}, "text", "unknown text generator"),
        ({"text": "weather", "language": "en", "voices": ["en"]}, "text", "supports pt"),
        ({"voices": ["pt+zz9"]}, "voices", "unknown espeak voice variant"),
        ({"voices": ["en+m1"]}, "voices", "speaks none"),
        ({"language": ["pt", "es"], "text": "general", "voices": {"pt": ["pt"]}}, "voices", "no voices for language(s) es"),
        ({"voices": {"pt": ["es+m1"]}}, "voices", "does not speak 'pt'"),
        ({"rate": [300, 200]}, "rate", "low <= high"),
        ({"rate": [20, 30]}, "rate", "80"),
        ({"pitch": "high"}, "pitch", "number"),
        ({"channel": [{"type": "echo"}]}, "channel", "unknown effect 'echo'"),
        ({"sizes": {"train": 5, "dev": 2}}, "sizes", "unknown split 'dev'"),
        ({"sizes": {"train": -1}}, "sizes", ">= 0"),
        ({"sizes": {"train": 0}}, "sizes", "every split is empty"),
        ({"max_duration": 0.1}, "max_duration", "number"),
        ({"colour": "blue"}, "colour", "unknown key"),
    ],
)
def test_bad_specs_name_the_set_and_key(overrides: dict, key: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_spec("weather", _spec(**overrides))
    message = str(info.value)
    assert "'weather'" in message and key in message and fragment in message, message


def test_missing_required_key_and_bad_seed(tmp_path: Path) -> None:
    spec = _spec()
    del spec["sizes"]
    with pytest.raises(ValueError, match=r"'weather', key 'sizes': missing"):
        parse_spec("weather", spec)
    with pytest.raises(ValueError, match="seed"):
        build_set("weather", _spec(), tmp_path, seed=-1)
    with pytest.raises(ValueError, match="set name"):
        parse_spec("../evil", _spec())


def test_default_sets_describe_the_demo_world() -> None:
    sets = default_sets()
    long_form = {name: parse_recordings_spec(name, spec, sets) for name, spec in sets.items() if is_recordings_spec(spec)}
    assert {spec["source"] for spec in long_form.values()} == {"banking", "ood_tourism_hall"}  # one ID, one OOD
    assert all(spec["recording_seconds"][0] >= 60 for spec in long_form.values())  # 1-3 min recordings
    parsed = {name: parse_spec(name, spec) for name, spec in sets.items() if name not in long_form}
    roles = [p.role for p in parsed.values()]
    assert roles.count("domain") == 10 and roles.count("ood") == 5
    assert {"brazilian", "english", "multilingual", "general"} <= set(roles)
    assert [name for name, p in parsed.items() if p.role == "domain"] == list(EP_DOMAINS)
    for name, p in parsed.items():
        assert p.languages == ("pt",) or p.role in ("brazilian", "english", "multilingual", "general"), name
        if p.role == "domain":
            assert set(p.sizes) == {"train", "validation", "test"} and p.texts == (name,)
        if p.role in ("ood", "brazilian", "english", "multilingual"):
            assert set(p.sizes) == {"test"}
    domain_conditions = {
        (p.texts, p.voices["pt"], p.rate, p.pitch, json.dumps(p.channel, sort_keys=True))
        for p in parsed.values() if p.role == "domain"
    }
    assert len(domain_conditions) == 10
    domain_channels = {json.dumps(p.channel, sort_keys=True) for p in parsed.values() if p.role == "domain"}
    assert len(domain_channels) == 10
    for p in parsed.values():
        if p.role == "ood":
            for domain in (q for q in parsed.values() if q.role == "domain"):
                assert (p.texts, json.dumps(p.channel, sort_keys=True)) != (domain.texts, json.dumps(domain.channel, sort_keys=True))
    general = parsed["general"]
    assert {"pt", "en"} <= set(general.languages) and len(general.languages) >= 5
    assert set(general.sizes) == {"train", "validation"} and set(general.texts) == {"general", "words"}
    assert parsed["general_pt"].languages == ("pt",) and parsed["ep_random_words"].texts == ("words",)
    # The foundation never hears a voice that a domain or a test set uses.
    pretraining_voices = {v for p in parsed.values() if p.role == "general" for vs in p.voices.values() for v in vs}
    other_voices = {v for p in parsed.values() if p.role != "general" for vs in p.voices.values() for v in vs}
    assert pretraining_voices and not pretraining_voices & other_voices
    assert parsed["brazilian"].languages == ("pt-BR",)
    assert set(parsed["multilingual"].languages) == {"es", "fr", "it", "de"}
    assert yaml.safe_load(yaml.safe_dump(sets)) == sets


def test_the_corpus_commands_build_validate_and_write_the_defaults(tmp_path: Path) -> None:
    config = micro_config_file(tmp_path)
    assert main(["corpus", "--configfile", str(config), "--set", "english"]) == 0
    manifest = tmp_path / "results" / "data" / "english" / "manifest.jsonl"  # where the run's rule writes it
    assert main(["validate-manifest", str(manifest)]) == 0
    assert main(["corpus", "--configfile", str(config), "--set", "english"]) == 2  # an earlier output: --overwrite
    assert main(["corpus", "--configfile", str(config), "--set", "english", "--overwrite"]) == 0
    assert main(["corpus-defaults", "--out", str(tmp_path / "defaults.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "defaults.yaml").read_text())["sets"] == default_sets()


def test_audio_is_not_clipped(tmp_path: Path) -> None:
    spec = _spec(text="sports", channel=[{"type": "gain", "gain_db": 20}], sizes={"test": 3})
    for row in read_manifest(build_set("loud", spec, tmp_path, seed=0)):
        audio, _ = sf.read(str(row.audio))
        assert np.max(np.abs(audio)) <= 0.995


def test_pretraining_never_uses_the_held_out_test_sentences(tmp_path: Path) -> None:
    general = _spec(role="general", language=["en", "pt"], text="general", voices=["en", "pt"], channel=[],
                    sizes={"train": 16, "validation": 4})
    english = _spec(role="english", language="en", text="general", voices=["en"], channel=[], sizes={"test": 6})
    pretraining = read_manifest(build_set("general", general, tmp_path / "g", seed=0))
    held_out = read_manifest(build_set("english", english, tmp_path / "e", seed=0))
    assert not any(is_heldout_text(row.text) for row in pretraining)
    assert all(is_heldout_text(row.text) for row in held_out)


def test_a_grammar_too_small_for_the_sizes_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asrmerge.data import text

    grammar = text.parse_grammar("@templates\nbom dia\nboa tarde\n", name="tiny", language="pt")
    monkeypatch.setitem(text.TEXT_GENERATORS, "tiny", text.GrammarGenerator(name="tiny", grammars={"pt": grammar}))
    with pytest.raises(ValueError, match=r"corpus set 'tiny'.*test utterance 2.*too small"):
        build_set("tiny", _spec(text="tiny", sizes={"test": 3}), tmp_path, seed=0)


def test_extends_starts_from_a_default_set() -> None:
    parsed = parse_spec("weather_big", {"extends": "weather", "sizes": {"train": 400, "test": 100}})
    default = parse_spec("weather", default_sets()["weather"])
    assert parsed.sizes == {"train": 400, "test": 100}
    assert (parsed.texts, parsed.voices, parsed.channel, parsed.rate) == (default.texts, default.voices, default.channel, default.rate)
    with pytest.raises(ValueError, match=r"'x', key 'extends': no default set 'nothing'"):
        parse_spec("x", {"extends": "nothing"})
