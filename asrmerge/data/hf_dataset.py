"""Sets read from a Hugging Face dataset (hub id or local folder: parquet files as the Hub stores them, a saved
`audiofolder`, a dataset with a loading configuration), materialised once into the project's manifest and audio
layout, so that everything downstream (validation, leakage check, decoding, scoring) is the same as for a manifest.

Audio is read undecoded (`datasets.Audio(decode=False)`: the row holds the file's bytes or path) and decoded with
soundfile, so no system FFmpeg is needed; it is mixed down to mono and resampled to the corpus rate.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asrmerge.atomic import write_json
from asrmerge.data.channel import resample
from asrmerge.defaults import default
from asrmerge.data.corpus import required_splits
from asrmerge.data.manifest import write_wav
from asrmerge.data.languages import canonical_language
from asrmerge.data.manifest import Utterance, validate_manifest, write_manifest
from asrmerge.models.source import is_hub_id

logger = logging.getLogger(__name__)

#: File beside a materialised set's manifest: where its rows came from (dataset, config, revision, splits, counts).
SOURCE_FILE = "source.json"
#: Environment variables with which `datasets` and `huggingface_hub` use only the local cache.
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class DatasetSource:
    """A set's `dataset:` entry (asrmerge/schemas/config.schema.yaml gives every key and its default)."""

    path: str
    name: str | None
    revision: str | None
    data_dir: str | None
    splits: Mapping[str, tuple[str, ...]]
    audio_column: str
    text_columns: tuple[str, ...]
    id_column: str | None
    language_column: str | None
    language: str | None
    max_utterances: int | None

    @classmethod
    def from_spec(cls, role: str, spec: Mapping[str, Any]) -> DatasetSource:
        """From a config entry, a key it leaves out taken from the schema's defaults; splits default to those the
        role uses, under the same names."""
        def value(key: str) -> Any:
            return spec[key] if key in spec else default(f"$defs.dataset.{key}")

        given = value("splits") or {split: split for split in required_splits(role)}
        splits = {split: (names,) if isinstance(names, str) else tuple(names) for split, names in given.items()}
        text = value("text_column")
        return cls(path=spec["path"], name=value("name"), revision=value("revision"), data_dir=value("data_dir"),
                   splits=splits, audio_column=value("audio_column"),
                   text_columns=(text,) if isinstance(text, str) else tuple(text), id_column=value("id_column"),
                   language_column=value("language_column"), language=value("language"),
                   max_utterances=value("max_utterances"))


def offline() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0", "false", "False") for name in OFFLINE_VARIABLES)


def _hub_cache(repo: str) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"


def _hub_cache_commit(repo: str, revision: str | None) -> str | None:
    """The commit the local Hub cache holds for `revision` (a branch or tag through its ref, a commit as itself)."""
    folder = _hub_cache(repo)
    revision = revision or "main"
    if _COMMIT.match(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def _datasets_cache(repo: str) -> Path:
    """Where `datasets` keeps what it prepared from a hub dataset (`<owner>___<name>`)."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / repo.replace("/", "___")


def local_files(source: DatasetSource, workdir: str | Path = ".") -> list[Path]:
    """Every file of a local dataset folder (its content decides whether the set is rebuilt)."""
    root = Path(workdir) / source.path
    return sorted(path for path in root.rglob("*") if path.is_file() and ".cache" not in path.parts)


def hub_revision(source: DatasetSource) -> str:
    """The commit of the local cache for a hub dataset's configured revision, or the revision as written when the
    cache does not hold it yet (pin `revision:` to a commit to fix the data)."""
    return _hub_cache_commit(source.path, source.revision) or f"{source.revision or 'main'} (not cached yet)"


def fingerprint(source: DatasetSource, cache: str | Path, workdir: str | Path = ".") -> str:
    """What the set is rebuilt on (a Snakemake param of its corpus job): the content of a local folder's files, or
    a hub dataset's revision (hub_revision)."""
    from asrmerge.data.content import content_digest

    if is_hub_id(source.path, workdir):
        return hub_revision(source)
    return content_digest(local_files(source, workdir), cache)


def availability_problem(source: DatasetSource, workdir: str | Path = ".") -> str | None:
    """Why the dataset cannot be read now: a missing local folder, or a hub dataset absent from the local cache
    while offline (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE)."""
    if not is_hub_id(source.path, workdir):
        folder = Path(workdir) / source.path
        if not folder.is_dir():
            return f"folder {source.path} does not exist"
        if not local_files(source, workdir):
            return f"folder {source.path} holds no files"
        return None
    if offline() and _hub_cache_commit(source.path, source.revision) is None and not _datasets_cache(
            source.path).is_dir():
        return (f"{source.path} (revision {source.revision or 'main'}) is in neither local Hugging Face cache (hub "
                f"files, prepared datasets) and the Hub is offline ({'/'.join(OFFLINE_VARIABLES)}); download it first "
                "(docs: user data)")
    return None


#: Metadata files of an audio folder (the `audiofolder` layout: one per split folder, or one at the top).
AUDIO_FOLDER_METADATA = ("metadata.csv", "metadata.jsonl")


def _audio_folder_metadata(root: Path, split: str) -> Path | None:
    """The metadata file of one split of an audio folder: `<split>/metadata.*`, or the top one for split `train`
    (as `datasets` names a folder without split folders)."""
    for folder in (root / split, root) if split == "train" else (root / split,):
        for name in AUDIO_FOLDER_METADATA:
            if (folder / name).is_file():
                return folder / name
    return None


def is_audio_folder(root: Path) -> bool:
    return any(path.name in AUDIO_FOLDER_METADATA for path in (*root.glob("*"), *root.glob("*/*")))


def _audio_folder_split(root: Path, split: str, audio_column: str) -> tuple[list[dict[str, Any]], dict[str, None]]:
    """Rows of an audio folder's split, read here rather than by `datasets` (whose audio encoder needs FFmpeg
    through torchcodec): each metadata row with its `file_name` as the audio column's path."""
    metadata = _audio_folder_metadata(root, split)
    if metadata is None:
        raise ValueError(f"no split {split} (no {' or '.join(AUDIO_FOLDER_METADATA)} in {root / split})")
    if metadata.suffix == ".csv":
        with metadata.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in metadata.read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows and "file_name" not in rows[0]:
        raise ValueError(f"{metadata} has no file_name column")
    table = [{**row, audio_column: {"bytes": None, "path": str(metadata.parent / row.pop("file_name"))}}
             for row in rows]
    return table, dict.fromkeys(table[0] if table else [audio_column])


def _local_folder(source: DatasetSource, workdir: Path) -> Path | None:
    """The folder a dataset is read from: a local one; offline, a hub dataset's files in the local Hub cache (which
    load_dataset would not read: offline it only looks for a dataset it prepared itself); None to go through the Hub
    (or, offline, the datasets cache)."""
    if not is_hub_id(source.path, workdir):
        return workdir / source.path
    commit = _hub_cache_commit(source.path, source.revision) if offline() else None
    return _hub_cache(source.path) / "snapshots" / commit if commit else None


def _load_split(source: DatasetSource, split: str, workdir: Path):
    """One split as an iterable of rows with undecoded audio and its columns: streamed from the Hub when online,
    else read through the local cache; a local folder is streamed from its files."""
    import datasets

    folder = _local_folder(source, workdir)
    if folder is not None and is_audio_folder(folder / (source.data_dir or "")):
        return _audio_folder_split(folder / (source.data_dir or ""), split, source.audio_column)
    dataset = datasets.load_dataset(str(folder) if folder is not None else source.path, source.name, split=split,
                                    revision=source.revision if folder is None else None, data_dir=source.data_dir,
                                    streaming=folder is not None or not offline())
    if source.audio_column not in dataset.features:
        raise ValueError(f"split {split} has no audio column {source.audio_column!r} "
                         f"(columns: {', '.join(dataset.features)})")
    return dataset.cast_column(source.audio_column, datasets.Audio(decode=False)), dataset.features


def _decode(audio: Mapping[str, Any] | None, base: Path) -> tuple[np.ndarray, int]:
    """Samples (mono float32) and rate of one undecoded audio cell: its bytes, else the file it names."""
    if not audio or not (audio.get("bytes") or audio.get("path")):
        raise ValueError("no audio (neither bytes nor a path)")
    data = audio.get("bytes")
    try:
        samples, rate = sf.read(io.BytesIO(data) if data else base / audio["path"], dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"audio cannot be read ({err})") from None
    return samples.mean(axis=1), int(rate)


def _cell(row: Mapping[str, Any], column: str, features: Mapping[str, Any]) -> Any:
    """A cell's value, a ClassLabel's index read as its name (FLEURS `lang_id`)."""
    value = row[column]
    feature = features.get(column)
    names = getattr(feature, "names", None)
    return names[value] if names is not None and isinstance(value, int) else value


def _text(row: Mapping[str, Any], columns: tuple[str, ...]) -> str:
    """The first non-empty text column in the order configured (e.g. raw_transcription before transcription)."""
    for column in columns:
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _language(row: Mapping[str, Any], source: DatasetSource, features: Mapping[str, Any]) -> str:
    """The row's language code: the configured one, else its language column (`pt`, `pt-BR`, `pt_br`); the manifest
    check refuses one Whisper does not know, naming the row."""
    if source.language is not None:
        return source.language
    return canonical_language(str(_cell(row, source.language_column, features)))


def _rows(source: DatasetSource, set_name: str, split: str, names: tuple[str, ...], workdir: Path,
          out_dir: Path, sample_rate: int) -> Iterator[Utterance]:
    """The project's rows of one split (audio written as 16-bit WAV under `out_dir`), up to max_utterances."""
    count = 0
    folder = _local_folder(source, workdir) or workdir  # what a row's relative audio path is relative to
    for name in names:
        rows, features = _load_split(source, name, workdir)
        for column in (*source.text_columns, source.id_column, source.language_column):
            if column is not None and column not in features:
                raise ValueError(f"split {name} has no column {column!r} (columns: {', '.join(features)})")
        for index, row in enumerate(rows):
            if source.max_utterances is not None and count >= source.max_utterances:
                return
            where = f"split {name} row {index}" + (f" ({source.id_column} {row[source.id_column]!r})"
                                                   if source.id_column else "")
            try:
                samples, rate = _decode(row[source.audio_column], folder)
                language = _language(row, source, features)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            samples = resample(samples, rate, sample_rate).astype(np.float32)
            uid = f"{set_name}-{split}-{count:06d}"
            audio = out_dir / "audio" / split / f"{uid}.wav"
            audio.parent.mkdir(parents=True, exist_ok=True)
            write_wav(audio, samples, sample_rate)
            extra = {"source_split": name, "source_row": index}
            if source.id_column:
                extra["source_id"] = str(row[source.id_column])
            yield Utterance(id=uid, audio=audio, text=_text(row, source.text_columns),
                            duration=round(len(samples) / sample_rate, 4), set=set_name, split=split,
                            language=language, extra=extra)
            count += 1


def materialise(source: DatasetSource, set_name: str, manifest: str | os.PathLike[str], sample_rate: int,
                workdir: str | Path = ".") -> Path:
    """Write the set's manifest (and audio beside it) from the dataset, then validate it as a user manifest is
    (asrmerge.data.manifest.validate_manifest: transcripts, audio, speaking rate, leakage between splits)."""
    workdir, manifest = Path(workdir), Path(manifest)
    problem = availability_problem(source, workdir)
    if problem:
        raise ValueError(f"dataset {source.path}: {problem}")
    rows: list[Utterance] = []
    counts = {}
    for split, names in source.splits.items():
        try:
            split_rows = list(_rows(source, set_name, split, names, workdir, manifest.parent, sample_rate))
        except ValueError as err:
            raise ValueError(f"dataset {source.path} ({source.name or 'default config'}): {err}") from None
        if not split_rows:
            raise ValueError(f"dataset {source.path} ({source.name or 'default config'}): splits {', '.join(names)} "
                             f"hold no rows for the {split} split")
        counts[split] = len(split_rows)
        rows += split_rows
    empty = [row for row in rows if not row.text]
    if empty:
        first = empty[0]
        raise ValueError(f"dataset {source.path}: {first.extra['source_split']} row {first.extra['source_row']} has "
                         f"no text in {', '.join(source.text_columns)}")
    # Files of an earlier build of this set that no row names now (a smaller cap): only the names it gives its files.
    named = {row.audio.resolve() for row in rows}
    for stale in (manifest.parent / "audio").glob(f"*/{set_name}-*.wav"):
        if stale.resolve() not in named:
            stale.unlink()
    write_manifest(manifest, rows)
    validate_manifest(manifest, expected_sample_rate=sample_rate, check_audio=True)
    revision = hub_revision(source) if is_hub_id(source.path, workdir) else "local folder"
    write_json(manifest.parent / SOURCE_FILE, {"path": source.path, "name": source.name, "revision": revision,
                                               "splits": {s: list(n) for s, n in source.splits.items()},
                                               "utterances": counts})
    logger.info("%s: %s utterances from %s (%s, %s)", set_name, json.dumps(counts), source.path,
                source.name or "default config", revision)
    return manifest
