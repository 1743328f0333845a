"""Sets read from Hugging Face datasets: local copies in the real datasets' layouts (tests/hf_fixtures.py) go through
the code path a user's config takes (asrmerge.data.hf_dataset), into the manifest layout everything else reads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

import hf_fixtures as fx
from speech_world import micro_config_file
from asrmerge.data.hf_dataset import SOURCE_FILE, DatasetSource, fingerprint, materialise
from asrmerge.data.manifest import read_manifest
from asrmerge.report.tables import cer_sets
from asrmerge.workflow.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "micro_config.yaml"


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    fx.fleurs(root / "fleurs", splits={"test": 3})
    fx.open_asr(root / "esb")
    fx.common_voice(root / "cv")
    fx.audio_folder(root / "clips", splits={"train": 3, "validation": 2, "test": 2})
    return root


def spec(**given):
    """A `dataset:` entry as validation leaves it (schema defaults filled)."""
    return {"name": None, "revision": None, "data_dir": None, "splits": None, "audio_column": "audio",
            "text_column": "text", "id_column": None, "language_column": None, "language": None,
            "max_utterances": None, **given}


def rows_of(role, entry, tmp_path, name="s"):
    manifest = materialise(DatasetSource.from_spec(role, entry), name, tmp_path / name / "manifest.jsonl", 16000)
    return read_manifest(manifest), json.loads((manifest.parent / SOURCE_FILE).read_text())


def test_fleurs_prefers_the_text_as_read_and_reads_the_language_label(datasets_dir, tmp_path):
    rows, source = rows_of("multilingual", spec(path=str(datasets_dir / "fleurs"), name="pt_br", id_column="id",
                                                text_column=["raw_transcription", "transcription"],
                                                language_column="lang_id"), tmp_path)
    assert [row.text for row in rows] == [t.capitalize() + "." for t in fx.PORTUGUESE[:3]]
    assert {row.language for row in rows} == {"pt"} and {row.variant for row in rows} == {"pt-BR"}
    # FLEURS repeats a sentence id across speakers: the project's ids stay unique, the source id is kept
    assert len({row.id for row in rows}) == 3 and [row.extra["source_id"] for row in rows] == ["1000", "1000", "1001"]
    assert source["utterances"] == {"test": 3} and source["revision"] == "local folder"


def test_open_asr_splits_are_read_one_after_the_other_up_to_the_cap(datasets_dir, tmp_path):
    rows, _ = rows_of("english", spec(path=str(datasets_dir / "esb"), name="librispeech", language="en",
                                      splits={"test": ["test.clean", "test.other"]}, max_utterances=3), tmp_path)
    assert [row.extra["source_split"] for row in rows] == ["test.clean", "test.clean", "test.other"]
    assert [row.text for row in rows] == list(fx.ENGLISH[:3])


def test_common_voice_mp3_at_48_khz_is_decoded_without_ffmpeg_and_resampled(datasets_dir, tmp_path):
    rows, _ = rows_of("brazilian", spec(path=str(datasets_dir / "cv"), name="pt", text_column="sentence",
                                        language_column="variant"), tmp_path)
    for row in rows:
        info = sf.info(row.audio)
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert abs(info.duration - row.duration) < 1e-3 and row.language == "pt" and row.variant == "pt-BR"


def test_an_audio_folder_gives_a_domain_its_three_splits(datasets_dir, tmp_path):
    rows, source = rows_of("domain", spec(path=str(datasets_dir / "clips"), text_column="transcription",
                                          language="pt"), tmp_path)
    assert source["utterances"] == {"train": 3, "validation": 2, "test": 2}
    assert sf.info(rows[0].audio).samplerate == 16000  # the folder's 22.05 kHz resampled


@pytest.mark.parametrize("change, message", [
    (dict(text_column="words"), r"split test has no column 'words'"),
    (dict(audio_column="sound"), r"split test has no audio column 'sound'"),
    (dict(splits={"test": "dev"}), r"dev"),
    (dict(language_column="language"), r"split test row 0.*not a language code: 'Portuguese'"),
])
def test_a_dataset_that_does_not_match_its_entry_is_named(datasets_dir, tmp_path, change, message):
    entry = spec(path=str(datasets_dir / "fleurs"), name="pt_br", text_column="transcription", language="pt")
    entry.update(change)
    if "language_column" in change:
        entry["language"] = None
    with pytest.raises(ValueError, match=message):
        rows_of("multilingual", entry, tmp_path)


def test_unreadable_audio_and_empty_text_name_the_row(tmp_path):
    import datasets

    features = datasets.Features({"audio": datasets.Audio(sampling_rate=16000), "text": datasets.Value("string")})
    good = fx.encoded(fx.speech(fx.ENGLISH[0], "en+m2"), 16000, "WAV")
    fx.write_parquet(tmp_path / "bad" / "test-00000-of-00001.parquet", features,
                     {"audio": [{"bytes": good, "path": None}, {"bytes": b"not audio", "path": None}],
                      "text": [fx.ENGLISH[0], "x"]})
    with pytest.raises(ValueError, match=r"split test row 1.*audio cannot be read"):
        rows_of("english", spec(path=str(tmp_path / "bad"), language="en"), tmp_path / "out")
    fx.write_parquet(tmp_path / "empty" / "test-00000-of-00001.parquet", features,
                     {"audio": [{"bytes": good, "path": None}] * 2, "text": [fx.ENGLISH[0], "  "]})
    with pytest.raises(ValueError, match=r"test row 1 has no text in text"):
        rows_of("english", spec(path=str(tmp_path / "empty"), language="en"), tmp_path / "out")


def test_a_local_dataset_is_rebuilt_when_a_file_changes(datasets_dir, tmp_path):
    import shutil

    copy = tmp_path / "esb"
    shutil.copytree(datasets_dir / "esb", copy)
    source = DatasetSource.from_spec("english", spec(path=str(copy), name="librispeech", language="en"))
    before = fingerprint(source, tmp_path / "digests.json")
    parquet = copy / "librispeech" / "test.other-00000-of-00001.parquet"
    stat = parquet.stat()
    fx.open_asr(copy, splits=("test.other",), count=1)  # rewritten in place, its times set back
    os.utime(parquet, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(source, tmp_path / "digests.json") != before


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(home: Path, dataset: Path, repo: str = "google/fleurs") -> None:
    """The local Hub cache as `hf download --repo-type dataset` leaves it: snapshots/<commit> and refs/main."""
    import shutil

    folder = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(dataset, folder / "snapshots" / HUB_COMMIT)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(HUB_COMMIT)


def test_offline_a_hub_dataset_is_read_from_the_local_cache(datasets_dir, tmp_path):
    fake_hub_cache(tmp_path / "home", datasets_dir / "fleurs")
    script = (
        "import json, sys\n"
        "from asrmerge.data.hf_dataset import DatasetSource, materialise\n"
        "entry = json.loads(sys.argv[1])\n"
        "materialise(DatasetSource.from_spec('multilingual', entry), 'fleurs_pt', sys.argv[2], 16000)\n"
    )
    entry = spec(path="google/fleurs", name="pt_br", language="pt", text_column="transcription", max_utterances=2)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = tmp_path / "fleurs_pt" / "manifest.jsonl"
    result = subprocess.run([sys.executable, "-c", script, json.dumps(entry), str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_manifest(out)) == 2
    assert json.loads((out.parent / SOURCE_FILE).read_text())["revision"] == HUB_COMMIT


def micro_with(sets: dict) -> dict:
    config = yaml.safe_load(MICRO.read_text())
    config["corpus"]["sets"].update(sets)
    return config


def test_a_hub_dataset_missing_offline_is_refused_with_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    config = micro_with({"fleurs_pt": {"role": "brazilian", "dataset": {"path": "google/fleurs", "name": "pt_br",
                                                                         "language": "pt"}}})
    with pytest.raises(ConfigError, match=r"corpus.sets.fleurs_pt.dataset.path: google/fleurs .*offline"):
        validate_config(config, workdir=ROOT)


@pytest.mark.parametrize("entry, message", [
    ({"role": "english", "dataset": {"path": "no/such-folder/here", "language": "en"}},
     r"corpus.sets.d.dataset.path: folder no/such-folder/here does not exist"),
    ({"role": "english", "dataset": {"path": "{esb}"}}, r"corpus.sets.d.dataset: give exactly one of language"),
    ({"role": "english", "dataset": {"path": "{esb}", "language": "xx"}}, r"corpus.sets.d.dataset.language"),
    ({"role": "english", "dataset": {"path": "{esb}", "language": "en", "splits": {"train": "test"}}},
     r"corpus.sets.d.dataset.splits.train: a english set does not use that split"),
    ({"role": "domain", "dataset": {"path": "{esb}", "language": "en", "splits": {"test": "test"}}},
     r"corpus.sets.d.dataset.splits: a domain set needs a train split"),
    ({"role": "english", "dataset": {"path": "{esb}", "language": "en"}, "manifest": "m.jsonl"},
     r"corpus.sets.d.dataset: the set also gives manifest"),
    ({"role": "english", "dataset": {"path": "{esb}", "language": "en"}, "voices": ["en+m1"]},
     r"corpus.sets.d.voices: has no effect beside `dataset:`"),
    ({"role": "english", "dataset": {"path": "{esb}", "language": "en", "max_utterances": 0}},
     r"corpus.sets.d.dataset.max_utterances"),
])
def test_a_bad_dataset_entry_is_refused_before_any_job(datasets_dir, entry, message):
    entry = json.loads(json.dumps(entry).replace("{esb}", str(datasets_dir / "esb")))
    with pytest.raises(ConfigError, match=message):
        validate_config(micro_with({"d": entry}), workdir=ROOT)


def test_a_sets_metric_overrides_the_one_its_languages_give(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"split": "test", "language": "ja"}) + "\n")
    assert cer_sets({"ja": manifest}) == ["ja"]
    assert cer_sets({"ja": manifest}, {"ja": "wer"}) == []
    assert cer_sets({"ja": manifest, "en": manifest}, {"en": "cer", "ja": "wer"}) == ["en"]


@pytest.mark.slow
def test_dataset_backed_sets_run_end_to_end(micro_workflow):
    """The micro workflow's FLEURS, Open ASR and audio-folder sets (tests/conftest.py) are scored for every system."""
    import pandas as pd

    _, results, _ = micro_workflow
    table = pd.read_csv(results / "tables" / "wer.csv")
    counts = table[table.test_set.isin(["fleurs_pt", "librispeech", "clips"])].groupby("test_set").utterances
    assert counts.unique().to_dict() == {"clips": [2], "fleurs_pt": [3], "librispeech": [4]}
    assert len(table[table.test_set == "fleurs_pt"]) == table.system.nunique()
    for name in ("fleurs_pt", "librispeech", "clips"):
        assert json.loads((results / "data" / name / SOURCE_FILE).read_text())["revision"] == "local folder"


def test_the_corpus_command_reads_a_dataset_set_as_the_rule_does(datasets_dir, tmp_path):
    config = micro_config_file(tmp_path, {"cv": {"role": "brazilian", "dataset": {
        "path": str(datasets_dir / "cv"), "name": "pt", "text_column": "sentence", "language": "pt-BR"}}})
    run = subprocess.run([sys.executable, "-m", "asrmerge.cli", "corpus", "--configfile", str(config), "--set", "cv",
                          "--out", str(tmp_path / "cv")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [row.text for row in read_manifest(tmp_path / "cv" / "manifest.jsonl")] == [
        t.capitalize() + "." for t in fx.PORTUGUESE[:2]]
