"""Small local copies of the paper's public datasets in their Hub layouts (column names, feature types, parquet files
under `<config>/<split>-0000i-of-0000n.parquet` with the Hub's README configs), spoken by espeak-ng, so that a
config naming them runs offline through the same code path as the real datasets (../shared layouts: FLEURS, the Open
ASR leaderboard's test-only sets, Common Voice, an audio folder)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from asrmerge.data.espeak import EspeakSynthesizer

PORTUGUESE = ("o comboio parte amanhã de manhã", "a reunião foi adiada para sexta feira",
              "o tempo vai estar nublado no norte", "a farmácia fecha às oito da noite",
              "os alunos chegaram cedo à escola", "a praia estava cheia de turistas")
ENGLISH = ("the train leaves early in the morning", "she read the letter twice before answering",
           "the market opens at nine on saturdays", "we walked along the river after dinner",
           "the meeting was moved to next week", "he forgot his umbrella at the station")


def speech(text: str, voice: str, sample_rate: int = 16000, rate: int = 170) -> np.ndarray:
    return EspeakSynthesizer(sample_rate).synthesize(text, voice=voice, rate=rate, pitch=50)


def encoded(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format=fmt)
    return buffer.getvalue()


def write_parquet(path: Path, features, rows: Mapping[str, Sequence]) -> None:
    """One parquet file with the `datasets` feature metadata the Hub's files carry (written without `datasets`'
    audio encoder, which needs torchcodec)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({name: pa.array(values, type=features[name].pa_type if hasattr(features[name], "pa_type")
                                     else None) for name, values in rows.items()})
    metadata = {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def write_readme(root: Path, configs: Mapping[str, Mapping[str, str]]) -> None:
    """The dataset card's YAML header that names each config's data files per split, as on the Hub."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {pattern}" for split, pattern in splits.items()]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]), encoding="utf-8")


def fleurs(root: Path, config: str = "pt_br", splits: Mapping[str, int] = {"test": 3}) -> Path:  # noqa: B006
    """`google/fleurs` (parquet revision): FLAC audio, normalised `transcription` and `raw_transcription`, ClassLabel
    `gender`, `lang_id`, `lang_group_id`; the sentence id repeats across speakers, as in FLEURS."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"), "path": datasets.Value("string"),
        "audio": datasets.Audio(sampling_rate=16000), "transcription": datasets.Value("string"),
        "raw_transcription": datasets.Value("string"),
        "gender": datasets.ClassLabel(names=["male", "female", "other"]),
        "lang_id": datasets.ClassLabel(names=["en_us", "pt_br"]), "language": datasets.Value("string"),
        "lang_group_id": datasets.ClassLabel(names=["western_european_we", "latin_american_la"]),
    })
    texts, voice, language = (PORTUGUESE, "pt+f2", "Portuguese") if config == "pt_br" else (ENGLISH, "en+m2",
                                                                                            "English")
    start = 0
    for split, count in splits.items():
        audio = [speech(texts[(start + i) % len(texts)], voice) for i in range(count)]
        rows = {
            "id": [1000 + (start + i) // 2 for i in range(count)],
            "num_samples": [len(a) for a in audio],
            "path": [f"{split}/{i}.wav" for i in range(count)],
            "audio": [{"bytes": encoded(a, 16000, "FLAC"), "path": f"{split}/{i}.wav"} for i, a in enumerate(audio)],
            "transcription": [texts[(start + i) % len(texts)] for i in range(count)],
            "raw_transcription": [texts[(start + i) % len(texts)].capitalize() + "." for i in range(count)],
            "gender": [i % 2 for i in range(count)], "lang_id": [1 if config == "pt_br" else 0] * count,
            "language": [language] * count, "lang_group_id": [0] * count,
        }
        write_parquet(root / config / f"{split}-00000-of-00001.parquet", features, rows)
        start += count
    write_readme(root, {config: {split: f"{config}/{split}-*.parquet" for split in splits}})
    return root


def open_asr(root: Path, config: str = "librispeech", splits: Sequence[str] = ("test.clean", "test.other"),
             count: int = 2) -> Path:
    """`hf-audio/esb-datasets-test-only-sorted`: WAV audio, `dataset`, `text`, `id`, `audio_length_s`; librispeech
    has the splits `test.clean` and `test.other`."""
    import datasets

    features = datasets.Features({
        "audio": datasets.Audio(sampling_rate=16000), "dataset": datasets.Value("string"),
        "text": datasets.Value("string"), "id": datasets.Value("string"), "audio_length_s": datasets.Value("float64"),
    })
    for s, split in enumerate(splits):
        texts = [ENGLISH[(s * count + i) % len(ENGLISH)] for i in range(count)]
        audio = [speech(text, "en+m3") for text in texts]
        rows = {"audio": [{"bytes": encoded(a, 16000, "WAV"), "path": None} for a in audio],
                "dataset": [config] * count, "text": texts, "id": [f"{split}-{i}" for i in range(count)],
                "audio_length_s": [len(a) / 16000 for a in audio]}
        write_parquet(root / config / f"{split}-00000-of-00001.parquet", features, rows)
    write_readme(root, {config: {split: f"{config}/{split}-*.parquet" for split in splits}})
    return root


def common_voice(root: Path, locale: str = "pt", count: int = 2) -> Path:
    """A Common Voice copy: MP3 audio, `sentence` as the text, `client_id`, votes, `accent`, `locale`."""
    import datasets

    features = datasets.Features({
        name: datasets.Value("string") for name in ("client_id", "path", "sentence", "age", "gender", "accent",
                                                    "locale", "segment", "variant")
    } | {"audio": datasets.Audio(sampling_rate=48000), "up_votes": datasets.Value("int64"),
         "down_votes": datasets.Value("int64")})
    texts = [PORTUGUESE[i % len(PORTUGUESE)] for i in range(count)]
    audio = [speech(text, "pt+m1", 48000) for text in texts]
    rows = {"client_id": [f"speaker{i}" for i in range(count)], "path": [f"cv_{i}.mp3" for i in range(count)],
            "sentence": [t.capitalize() + "." for t in texts], "age": ["twenties"] * count, "gender": [""] * count,
            "accent": [""] * count, "locale": [locale] * count, "segment": [""] * count,
            "variant": ["pt-BR"] * count, "up_votes": [2] * count, "down_votes": [0] * count,
            "audio": [{"bytes": encoded(a, 48000, "MP3"), "path": f"cv_{i}.mp3"} for i, a in enumerate(audio)]}
    write_parquet(root / locale / "test-00000-of-00001.parquet", features, rows)
    write_readme(root, {locale: {"test": f"{locale}/test-*.parquet"}})
    return root


def audio_folder(root: Path, splits: Mapping[str, int] = {"test": 3}, sample_rate: int = 22050) -> Path:  # noqa: B006
    """An `audiofolder`: WAV files in one folder per split with a metadata.csv (`file_name`, `transcription`), at
    another rate than the corpus's."""
    start = 0
    for split, count in splits.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "transcription"])
            for i in range(count):
                text = PORTUGUESE[(start + i) % len(PORTUGUESE)]
                audio = speech(text, "pt+m3", sample_rate, rate=150 + 5 * (start + i))  # no recording twice
                sf.write(folder / f"clip{i}.wav", audio, sample_rate, subtype="PCM_16")
                writer.writerow([f"clip{i}.wav", text])
        start += count
    return root


def dataset_sets(root: Path) -> dict[str, dict]:
    """Three test sets read the way a config names the paper's data, built under `root`: FLEURS (the text as read,
    the language from its label), an Open ASR set (two splits into one) and an audio folder at 22.05 kHz."""
    fleurs(root / "fleurs", splits={"test": 3})
    open_asr(root / "esb", count=2)
    audio_folder(root / "clips", splits={"test": 2})
    return {
        "fleurs_pt": {"role": "brazilian", "dataset": {"path": str(root / "fleurs"), "name": "pt_br",
                                                         "text_column": ["raw_transcription", "transcription"],
                                                         "language_column": "lang_id"}},
        "librispeech": {"role": "english", "dataset": {"path": str(root / "esb"), "name": "librispeech",
                                                        "splits": {"test": ["test.clean", "test.other"]},
                                                        "language": "en", "id_column": "id"}},
        "clips": {"role": "ood", "dataset": {"path": str(root / "clips"), "text_column": "transcription",
                                             "language": "pt"}},
    }
