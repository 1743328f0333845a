"""Manifest format: writing, reading, validation errors, audio loading."""

from __future__ import annotations

import json
import zlib
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asrmerge.data.manifest import Utterance, load_audio, read_manifest, validate_manifest, write_manifest
from asrmerge.data.user_manifest import import_manifest


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    # each file its own recording, the same whatever the temporary folder (its name, not its path: two paths' pitches
    # could collide in one run and not the next)
    pitch = 220 + zlib.crc32(path.name.encode()) % 2000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _row(index: int, **overrides: object) -> dict:
    row = {
        "id": f"utt-{index}", "audio": f"audio/utt-{index}.wav", "text": "bom dia", "duration": 0.5,
        "set": "toy", "split": "train", "language": "pt",
    }
    row.update(overrides)
    return row


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    for index in range(3):
        _wav(tmp_path / "audio" / f"utt-{index}.wav")
    return write_manifest(tmp_path / "manifest.jsonl", [_row(0), _row(1, split="test"), _row(2, variant="pt-PT")])


def _write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_round_trip_and_split_filter(good: Path) -> None:
    rows = validate_manifest(good)
    assert [row.id for row in rows] == ["utt-0", "utt-1", "utt-2"]
    assert rows[0].audio == (good.parent / "audio" / "utt-0.wav").resolve()
    assert rows[2].variant == "pt-PT"
    assert [row.id for row in read_manifest(good, split="test")] == ["utt-1"]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        read_manifest(good, split="dev")
    copy = write_manifest(good.parent / "copy.jsonl", rows)
    assert json.loads(copy.read_text(encoding="utf-8").splitlines()[0])["audio"] == "audio/utt-0.wav"
    assert read_manifest(copy) == rows


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.jsonl"
    write_manifest(target, [_row(0)])
    write_manifest(target, [_row(1)])
    assert [p.name for p in target.parent.iterdir()] == ["m.jsonl"]
    assert json.loads(target.read_text())["id"] == "utt-1"


def test_extra_fields_are_kept(tmp_path: Path) -> None:
    _wav(tmp_path / "audio" / "utt-0.wav")
    path = _write_lines(tmp_path / "m.jsonl", [_row(0, voice="pt+f2", channel=[{"type": "telephone"}])])
    utt = read_manifest(path)[0]
    assert utt.extra == {"voice": "pt+f2", "channel": [{"type": "telephone"}]}
    assert utt.to_json(tmp_path)["voice"] == "pt+f2"


def _expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_manifest(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_audio_names_row_and_file(good: Path) -> None:
    (good.parent / "audio" / "utt-1.wav").unlink()
    _expect_error(good, "line 2", "'utt-1'", "utt-1.wav", "missing")


def test_corrupt_audio_names_row_and_file(good: Path) -> None:
    (good.parent / "audio" / "utt-2.wav").write_bytes(b"RIFF\x00\x00garbage, not a wave file")
    _expect_error(good, "line 3", "'utt-2'", "utt-2.wav", "not readable audio")


def test_wrong_duration_names_row_and_file(tmp_path: Path) -> None:
    _wav(tmp_path / "audio" / "utt-0.wav", seconds=0.5)
    path = _write_lines(tmp_path / "m.jsonl", [_row(0, duration=2.0)])
    _expect_error(path, "line 1", "'utt-0'", "utt-0.wav", "lasts 0.500 s")


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        ({"text": ""}, ("'utt-1'", "'text'", "utt-1.wav")),
        ({"text": "   "}, ("'utt-1'", "'text'")),
        ({"text": 42}, ("'utt-1'", "'text'")),
        ({"language": "klingon"}, ("'utt-1'", "language 'klingon'", "utt-1.wav")),
        ({"language": "pt-BR", "variant": "pt-PT"}, ("'utt-1'", "language 'pt-BR' and variant 'pt-PT' disagree")),
        ({"language": "xx-BR"}, ("'utt-1'", "language 'xx'")),
        ({"split": "dev"}, ("'utt-1'", "unknown split 'dev'")),
        ({"duration": -1}, ("'utt-1'", "'duration'")),
        ({"variant": "en-US"}, ("'utt-1'", "variant 'en-US'")),
        ({"id": "utt-0"}, ("'utt-0'", "duplicate id", "first on line 1", "utt-1.wav")),
    ],
)
def test_bad_rows_name_the_line_id_and_manifest(tmp_path: Path, bad: dict, fragments: tuple[str, ...]) -> None:
    for index in range(2):
        _wav(tmp_path / "audio" / f"utt-{index}.wav")
    path = _write_lines(tmp_path / "m.jsonl", [_row(0), _row(1, **bad)])
    _expect_error(path, "line 2", *fragments)


def test_a_regional_language_code_is_read_as_language_and_variant(tmp_path: Path) -> None:
    _wav(tmp_path / "audio" / "utt-0.wav")
    path = _write_lines(tmp_path / "m.jsonl", [_row(0, language="pt-br")])
    (row,) = validate_manifest(path)
    assert (row.language, row.variant) == ("pt", "pt-BR")


def test_an_imported_manifest_keeps_each_row_s_own_set_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for index in range(2):
        _wav(tmp_path / "audio" / f"utt-{index}.wav")
    source = _write_lines(tmp_path / "m.jsonl", [_row(0, set="cv_pt"), _row(1, set="weather")])
    with caplog.at_level(logging.INFO):
        out = import_manifest(source, "weather", tmp_path / "out" / "manifest.jsonl")
    rows = read_manifest(out)
    assert [row.set for row in rows] == ["weather", "weather"]
    assert [row.extra.get("source_set") for row in rows] == ["cv_pt", None]
    assert "cv_pt" in caplog.text and "imported as set weather" in caplog.text


def test_missing_field_and_bad_json(tmp_path: Path) -> None:
    row = _row(0)
    del row["set"]
    _expect_error(_write_lines(tmp_path / "a.jsonl", [row]), "line 1", "missing field(s) set")
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(_row(0)) + "\n{not json\n", encoding="utf-8")
    _expect_error(path, "line 2", "not valid JSON")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.jsonl")


def test_rows_only_validation_skips_audio(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [_row(0)])
    assert len(validate_manifest(path, check_audio=False)) == 1


def test_load_audio_resamples_22050_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _wav(tmp_path / "native.wav", seconds=1.0, rate=22050)
    with caplog.at_level(logging.WARNING, logger="asrmerge.data.manifest"):
        audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 16000) <= 1
    assert any("22050" in record.getMessage() and "16000" in record.getMessage() for record in caplog.records)
    caplog.clear()
    same = load_audio(_wav(tmp_path / "plain.wav", seconds=0.25), 16000)
    assert same.size == 4000 and not caplog.records


def test_validate_warns_about_other_sample_rates(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _wav(tmp_path / "audio" / "utt-0.wav", seconds=0.5, rate=22050)
    path = _write_lines(tmp_path / "m.jsonl", [_row(0)])
    with caplog.at_level(logging.WARNING, logger="asrmerge.data.manifest"):
        validate_manifest(path, expected_sample_rate=16000)
    assert any("22050 Hz" in record.getMessage() for record in caplog.records)


def test_load_audio_downmixes_stereo(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    data = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    sf.write(str(path), data, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), np.full(800, 0.2), atol=1e-6)


def test_utterance_is_frozen() -> None:
    utt = Utterance(id="a", audio=Path("/x.wav"), text="t", duration=1.0, set="s", split="test", language="pt")
    with pytest.raises(AttributeError):
        utt.text = "other"  # type: ignore[misc]


def test_audio_paths_leading_out_of_the_manifest_folder_are_refused(tmp_path: Path) -> None:
    outside = _wav(tmp_path / "elsewhere" / "a.wav")
    folder = tmp_path / "set"
    folder.mkdir()
    _write_lines(folder / "manifest.jsonl", [_row(0, audio="../elsewhere/a.wav")])
    with pytest.raises(ValueError, match=r"line 1.*'../elsewhere/a.wav' leads out of the manifest's folder"):
        read_manifest(folder / "manifest.jsonl")
    _write_lines(folder / "manifest.jsonl", [_row(0, audio=str(outside)), _row(1, audio="audio/../audio/b.wav")])
    rows = read_manifest(folder / "manifest.jsonl")  # absolute paths and tidy relative ones stay allowed
    assert rows[0].audio == outside and rows[1].audio == folder.resolve() / "audio" / "b.wav"
