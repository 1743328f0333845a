"""One run per results folder, and a `results:` key that names a folder of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asrmerge import layout
from asrmerge.workflow.config import ConfigError, results_folder
from asrmerge.workflow.lock import ResultsInUse, acquire, release

ROOT = Path(__file__).resolve().parents[1]


def test_results_key_is_expanded_and_refused_where_it_is_no_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("ASRMERGE_TEST_RUNS", str(tmp_path / "runs"))
    assert results_folder("$ASRMERGE_TEST_RUNS/demo", tmp_path) == str(tmp_path / "runs" / "demo")
    assert results_folder("~/x", tmp_path) == str(Path.home() / "x")
    assert results_folder("results/demo", tmp_path) == "results/demo"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("mine")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "models").mkdir()  # an earlier results folder: only the layout's names
    assert results_folder("old", tmp_path) == "old"
    for value, message in (("", "empty"), ("   ", "empty"), ("$ASRMERGE_NOT_SET_ANYWHERE/x", "not set"),
                           ("/", "not a folder of its own"), (".", "not a folder of its own"),
                           ("~", "not a folder of its own"), ("mine", "holds thesis.tex")):
        with pytest.raises(ConfigError, match=message):
            results_folder(value, tmp_path)


def test_a_second_run_on_a_held_folder_is_refused_and_a_gone_run_is_taken_over(tmp_path):
    lock = acquire(tmp_path / "results")
    assert (tmp_path / "results" / layout.RESULTS_MARKER).exists()
    with pytest.raises(ResultsInUse, match="in use by another run"):
        acquire(tmp_path / "results")
    release(tmp_path / "results")
    assert not lock.exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = {"host": os.uname().nodename, "pid": gone.pid, "workdir": "/elsewhere", "since": "earlier"}
    lock.write_text(json.dumps(holder))
    acquire(tmp_path / "results")  # the process that held it is gone
    release(tmp_path / "results")


@pytest.mark.slow
def test_a_workflow_run_is_refused_while_another_holds_its_results_folder(tmp_path):
    config = yaml.safe_load((ROOT / "tests" / "data" / "micro_config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / layout.RESULTS_LOCK).write_text(json.dumps(
            {"host": os.uname().nodename, "pid": other.pid, "workdir": "/another/checkout", "since": "now"}))
        result = subprocess.run([sys.executable, "-m", "snakemake", f"{tmp_path}/results/data/english/manifest.jsonl",
                                 "--cores", "1", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                                 "--configfile", str(path)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode != 0
        assert "in use by another run (from /another/checkout" in result.stdout + result.stderr
        assert not (tmp_path / "results" / "data").exists()
    finally:
        other.kill()


@pytest.mark.slow
def test_user_audio_replaced_in_place_reruns_its_import_and_nothing_else_does(tmp_path):
    """A user manifest's set is tracked by the content of the manifest and its audio: a WAV replaced in place (its
    old modification time kept, as `cp -a` keeps it) reruns the import; an untouched set plans nothing."""
    import numpy as np
    import soundfile as sf

    from asrmerge.data.corpus import build_set

    config = yaml.safe_load((ROOT / "tests" / "data" / "micro_config.yaml").read_text())
    mine = build_set("mine", dict(config["corpus"]["sets"]["english"]), tmp_path / "mine", seed=0)
    config["corpus"]["sets"]["english"] = {"role": "english", "manifest": str(mine)}
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    target = f"{tmp_path}/results/data/english/manifest.jsonl"

    def snakemake(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "snakemake", target, "--cores", "1", "--snakefile",
                                 str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(path), *args],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout + result.stderr

    snakemake()
    assert "Nothing to be done" in snakemake("--dry-run")
    wav = sorted((tmp_path / "mine" / "audio" / "test").glob("*.wav"))[0]
    stat = wav.stat()
    samples, rate = sf.read(wav, dtype="float32")
    sf.write(wav, (0.5 * samples[::-1]).astype(np.float32), rate, subtype="PCM_16")
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "corpus_set" in snakemake("--dry-run")
