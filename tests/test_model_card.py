"""Exported merges as a Hub user picks them up: a model card with the Hub's metadata and this run's results, and a
recipe from which `asrmerge merge --recipe` rebuilds the same weights (the micro workflow's exports)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asrmerge import layout
from asrmerge.layout import MERGE_RECIPE, MODEL_CARD
from asrmerge.merging.recipe import read_recipe

pytestmark = pytest.mark.slow


def card_metadata(folder: Path) -> dict:
    text = (folder / MODEL_CARD).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def exported(results: Path, method: str) -> Path:
    return next((results / "merged_models" / method).iterdir())


def asrmerge(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "asrmerge.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_every_export_has_a_card_with_the_runs_results(micro_workflow):
    _, results, config = micro_workflow
    folders = [folder for method in (results / "merged_models").iterdir() for folder in method.iterdir()]
    assert folders
    for folder in folders:
        metadata = card_metadata(folder)
        info = json.loads((folder / "merge_info.json").read_text())
        assert metadata["pipeline_tag"] == "automatic-speech-recognition" and "merge" in metadata["tags"]
        assert info["method"] in metadata["tags"] and set(metadata["language"]) == {"pt"}
        scores = json.loads((results / layout.SCORES.format(system=layout.merged_system(info["branch"]))).read_text())
        entries = metadata["model-index"][0]["results"]
        assert [entry["dataset"]["name"] for entry in entries] == list(scores)
        for entry in entries:  # each value is the test set's error rate of this branch's score file
            total = scores[entry["dataset"]["name"]]["total"]
            words = total["substitutions"] + total["deletions"] + total["insertions"]
            if entry["metrics"][0]["type"] == "wer":
                assert entry["metrics"][0]["value"] == pytest.approx(round(100 * words / total["reference_words"], 2))
        recipe = read_recipe(folder / MERGE_RECIPE)
        assert recipe.method == info["method"] and recipe.lam == info["lambda"] and recipe.branch == info["branch"]


@pytest.mark.parametrize("method", ["tsv_m", "regmean"])
def test_a_recipe_rebuilds_the_same_weights(micro_workflow, tmp_path, method):
    _, results, _ = micro_workflow
    folder = exported(results, method)
    run = asrmerge("merge", "--recipe", folder / MERGE_RECIPE, "--out-model", tmp_path / "rebuilt")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "rebuilt" / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (tmp_path / "rebuilt" / "config.json").read_bytes() == (folder / "config.json").read_bytes()


def test_a_recipe_whose_input_changed_is_refused_naming_it(micro_workflow, tmp_path):
    _, results, _ = micro_workflow
    recipe = json.loads((exported(results, "task_arithmetic") / MERGE_RECIPE).read_text())
    changed = tmp_path / "tau.safetensors"
    shutil.copyfile(recipe["task_vectors"][0], changed)
    with changed.open("r+b") as handle:  # one byte of the last tensor's data
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    recipe["sha256"][str(changed)] = recipe["sha256"].pop(recipe["task_vectors"][0])
    recipe["task_vectors"][0] = str(changed)
    (tmp_path / MERGE_RECIPE).write_text(json.dumps(recipe))
    run = asrmerge("merge", "--recipe", tmp_path / MERGE_RECIPE, "--out-model", tmp_path / "rebuilt")
    assert run.returncode != 0 and f"recipe input {changed} has changed" in run.stderr
    assert not (tmp_path / "rebuilt").exists()
    run = asrmerge("merge", "--recipe", tmp_path / MERGE_RECIPE, "--out-model", tmp_path / "x", "--method", "ties")
    assert run.returncode != 0 and "--recipe fixes --method" in run.stderr


def test_an_export_transcribes_in_the_plain_pipeline_as_the_workflow_did(micro_workflow):
    """A Hub user's first step: `pipeline("automatic-speech-recognition", model=folder)` with no arguments writes
    what the workflow's decoder wrote for that merge, utterance by utterance (the micro base is pretrained by the
    run itself: its vocabulary and tokenizer are Whisper's from the start)."""
    from transformers import pipeline

    from asrmerge.data.manifest import load_audio, read_manifest

    _, results, _ = micro_workflow
    folder = exported(results, "task_arithmetic")
    branch = json.loads((folder / "merge_info.json").read_text())["branch"]
    written = [json.loads(line) for line in
               (results / "hypotheses" / "merged" / branch / "weather.jsonl").read_text().splitlines()]
    rows = {row.id: row for row in read_manifest(results / "data" / "weather" / "manifest.jsonl", split="test")}
    asr = pipeline("automatic-speech-recognition", model=str(folder), device="cpu")
    theirs = asr([load_audio(rows[entry["id"]].audio, 16000) for entry in written], batch_size=4)
    assert [entry["hypothesis"] for entry in written] == [out["text"].strip() for out in theirs]
