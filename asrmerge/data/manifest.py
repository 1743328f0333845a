"""The utterance manifest: JSON Lines, one object per utterance.

Required fields::

    {"id": "weather-test-00003",            # unique within the manifest
     "audio": "audio/test/weather-test-00003.wav",  # relative to the manifest's folder, or absolute
     "text": "amanhã céu limpo no algarve",  # non-empty transcript
     "duration": 2.415,                      # seconds
     "set": "weather",
     "split": "test",                        # train | validation | test
     "language": "pt"}                       # Whisper language code (a regional code such as "pt-BR" is
                                             # read as language "pt" with variant "pt-BR")

Optional: ``"variant"`` (regional variant such as ``"pt-BR"``, whose base must equal ``language``) and any
further keys (the corpus builder writes ``voice``, ``rate``, ``pitch``, ``generator``, ``channel``), which
readers keep in `Utterance.extra`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asrmerge.atomic import write_text
from asrmerge.data.channel import resample
from asrmerge.data.content import (
    file_digest, leakage_problem, reference_problem, samples_problem, speaking_rate_problem,
)
from asrmerge.data.languages import WHISPER_LANGUAGES, canonical_language
from asrmerge.defaults import default

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "audio", "text", "duration", "set", "split", "language")
OPTIONAL_FIELDS: tuple[str, ...] = ("variant",)
# How far a file's real length may differ from the manifest's duration before validation complains.
DURATION_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Utterance:
    """One manifest row. ``audio`` is resolved to an absolute path when read from a file."""

    id: str
    audio: Path
    text: str
    duration: float
    set: str
    split: str
    language: str
    variant: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self, base_dir: Path | None = None) -> dict[str, Any]:
        """The manifest object; ``audio`` relative to ``base_dir`` when it lies inside it."""
        audio = Path(self.audio)
        if base_dir is not None and audio.is_absolute():
            try:
                audio = audio.relative_to(Path(base_dir).resolve())
            except ValueError:
                pass
        row: dict[str, Any] = {
            "id": self.id,
            "audio": audio.as_posix(),
            "text": self.text,
            "duration": self.duration,
            "set": self.set,
            "split": self.split,
            "language": self.language,
        }
        if self.variant is not None:
            row["variant"] = self.variant
        row.update({key: value for key, value in self.extra.items() if key not in row})
        return row


def _regional_code(code: Any) -> str | None:
    """`code` as a canonical regional code ("pt-br" -> "pt-BR") when it is one, else None."""
    try:
        canonical = canonical_language(code)
    except ValueError:
        return None
    return canonical if "-" in canonical else None


def _row_error(manifest: Path, line: int, row_id: str | None, message: str) -> ValueError:
    who = f" (id {row_id!r})" if row_id is not None else ""
    return ValueError(f"manifest {manifest}, line {line}{who}: {message}")


def _parse_row(manifest: Path, line: int, raw: str) -> Utterance:
    """One JSON line -> Utterance, checking field presence, types and values."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _row_error(manifest, line, None, f"not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise _row_error(manifest, line, None, f"expected a JSON object, got {type(row).__name__}")
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        raise _row_error(manifest, line, None, f"'id' must be a non-empty string, got {row_id!r}")
    missing = [key for key in REQUIRED_FIELDS if key not in row]
    if missing:
        raise _row_error(manifest, line, row_id, f"missing field(s) {', '.join(missing)}")
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise _row_error(manifest, line, row_id, f"'text' must be a non-empty string, got {text!r} (audio {row['audio']!r})")
    audio = row["audio"]
    if not isinstance(audio, str) or not audio:
        raise _row_error(manifest, line, row_id, f"'audio' must be a path string, got {audio!r}")
    duration = row["duration"]
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
        raise _row_error(manifest, line, row_id, f"'duration' must be a positive number of seconds, got {duration!r}")
    if not isinstance(row["set"], str) or not row["set"]:
        raise _row_error(manifest, line, row_id, f"'set' must be a non-empty string, got {row['set']!r}")
    if row["split"] not in SPLITS:
        raise _row_error(manifest, line, row_id, f"unknown split {row['split']!r} (expected one of {', '.join(SPLITS)})")
    language, variant = row["language"], row.get("variant")
    regional = _regional_code(language)
    if regional is not None:  # "pt-BR" as a language: Whisper's code "pt", region kept as the variant
        if variant is not None and _regional_code(variant) != regional:
            raise _row_error(manifest, line, row_id, f"language {language!r} and variant {variant!r} disagree")
        language, variant = regional.split("-", 1)[0], regional
    if language not in WHISPER_LANGUAGES:
        raise _row_error(
            manifest, line, row_id,
            f"language {language!r} is not a Whisper language code (e.g. pt, en, es, fr, it, de, or a regional "
            f"code such as pt-BR; audio {audio!r})",
        )
    if variant is not None:
        try:
            base = canonical_language(variant).split("-", 1)[0]
        except ValueError:
            base = None
        if base != language:
            raise _row_error(manifest, line, row_id, f"variant {variant!r} does not belong to language {language!r}")
    path = Path(audio)
    if not path.is_absolute():
        folder = manifest.resolve().parent
        path = Path(os.path.normpath(folder / path))
        if not path.is_relative_to(folder):
            raise _row_error(manifest, line, row_id, f"audio path {audio!r} leads out of the manifest's folder "
                             f"{folder} (write an absolute path for audio kept elsewhere)")
    extra = {key: value for key, value in row.items() if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS}
    return Utterance(
        id=row_id, audio=path, text=text, duration=float(duration), set=row["set"], split=row["split"],
        language=language, variant=variant, extra=extra,
    )


def _read_rows(path: Path) -> list[tuple[int, Utterance]]:
    manifest = Path(path)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist")
    rows: list[tuple[int, Utterance]] = []
    seen: dict[str, int] = {}
    with manifest.open(encoding="utf-8") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            utterance = _parse_row(manifest, line_number, raw)
            if utterance.id in seen:
                raise _row_error(
                    manifest, line_number, utterance.id,
                    f"duplicate id (first on line {seen[utterance.id]}; audio {utterance.audio})",
                )
            seen[utterance.id] = line_number
            rows.append((line_number, utterance))
    return rows


def read_manifest(path: str | os.PathLike[str], split: str | None = None) -> list[Utterance]:
    """Read a manifest (all rows, or one ``split``), checking each row's fields; audio paths made absolute.

    FileNotFoundError if the manifest is missing; ValueError naming the manifest, line and id for a bad row.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    return [utt for _, utt in _read_rows(Path(path)) if split is None or utt.split == split]


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Utterance | Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON Lines, atomically (asrmerge.atomic).

    Utterance audio paths inside the manifest's folder are written relative to it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    base_dir = target.parent.resolve()
    lines: list[str] = []
    for row in rows:
        obj = row.to_json(base_dir) if isinstance(row, Utterance) else dict(row)
        lines.append(json.dumps(obj, ensure_ascii=False, allow_nan=False))
    write_text(target, "".join(line + "\n" for line in lines))
    return target


def validate_manifest(
    path: str | os.PathLike[str], expected_sample_rate: int | None = 16000, check_audio: bool = True
) -> list[Utterance]:
    """Check a manifest thoroughly and return its rows.

    Row checks (always): at least one row, valid JSON, required fields, a transcript with words once normalised for
    scoring, known split, Whisper language code, unique ids. Audio checks (``check_audio``): the file exists and is
    readable audio with samples, finite and within full scale, its length matches ``duration``, the transcript fits
    it (asrmerge.data.content: speaking rate), and no recording is in a training or validation split and in the
    test split (by content). Files at another sample rate than ``expected_sample_rate`` are reported with
    one logged warning (`load_audio` resamples them). Raises ValueError naming the manifest, line, id and file.
    """
    manifest = Path(path)
    rows = _read_rows(manifest)
    if not rows:
        raise ValueError(f"manifest {manifest} has no rows")
    for line_number, utt in rows:
        problem = reference_problem(utt.text, utt.language)
        if problem:
            raise _row_error(manifest, line_number, utt.id, problem)
    if check_audio:
        other_rates: dict[int, int] = {}
        digests = []
        for line_number, utt in rows:
            info = _audio_info(manifest, line_number, utt)
            if expected_sample_rate is not None and info.samplerate != expected_sample_rate:
                other_rates[info.samplerate] = other_rates.get(info.samplerate, 0) + 1
            real = info.frames / info.samplerate
            if abs(real - utt.duration) > DURATION_TOLERANCE_S:
                raise _row_error(
                    manifest, line_number, utt.id,
                    f"audio file {utt.audio} lasts {real:.3f} s but the manifest says {utt.duration:.3f} s",
                )
            samples, _ = sf.read(str(utt.audio), dtype="float32", always_2d=True)
            problem = samples_problem(samples) or speaking_rate_problem(utt.text, utt.language, real)
            if problem:
                raise _row_error(manifest, line_number, utt.id, f"audio file {utt.audio}: {problem}")
            digests.append((file_digest(utt.audio), utt.split, f"row {utt.id} ({utt.split}, line {line_number})"))
        problem = leakage_problem(digests)
        if problem:
            raise ValueError(f"manifest {manifest}: {problem}")
        if other_rates:
            found = ", ".join(f"{count} at {rate} Hz" for rate, count in sorted(other_rates.items()))
            logger.warning(
                "manifest %s: %s, expected %d Hz (they will be resampled when loaded)", manifest, found, expected_sample_rate
            )
    return [utt for _, utt in rows]


def _audio_info(manifest: Path, line_number: int, utt: Utterance) -> Any:
    if not utt.audio.is_file():
        raise _row_error(manifest, line_number, utt.id, f"audio file {utt.audio} is missing")
    try:
        info = sf.info(str(utt.audio))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise _row_error(manifest, line_number, utt.id, f"audio file {utt.audio} is not readable audio ({err})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise _row_error(manifest, line_number, utt.id, f"audio file {utt.audio} holds no samples")
    return info


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV, encoded in memory and written in one go (libsndfile would fsync a real file on close)."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
    path.write_bytes(buffer.getvalue())


def load_audio(path: str | os.PathLike[str], sample_rate: int = default("corpus.sample_rate")) -> np.ndarray:
    """Read an audio file as float32 mono at ``sample_rate`` (channels averaged).

    A file at another rate is resampled with a polyphase filter, and a warning saying so is logged.
    """
    source = Path(path)
    try:
        data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise ValueError(f"cannot read audio file {source}: {err}") from None
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        logger.warning("%s: sample rate %d Hz, resampling to %d Hz", source, rate, sample_rate)
        audio = resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)
