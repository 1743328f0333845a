"""The real DAG on the micro config: content of the outputs, lint, no-op rerun, and a one-branch rerun."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "micro_config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", str(ROOT / "Snakefile"),
             "--directory", str(ROOT)]

pytestmark = pytest.mark.slow


def snakemake(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--configfile", str(config_path), *args],
        capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def planned_jobs(config_path: Path) -> dict[str, int]:
    """Rule -> number of jobs a dry run would execute."""
    out = snakemake(config_path, "--dry-run", "--quiet", "rules").stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.MULTILINE) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def finished(micro_workflow):
    """The micro workflow run once (tests/conftest.py) into a temporary results folder."""
    return micro_workflow


def test_table_has_every_system_and_test_set(finished):
    _, results, _ = finished
    table = pd.read_csv(results / "tables" / "wer.csv")
    systems = {"base", "joint", "finetuned/weather", "finetuned/medical",
               "merged/task_arithmetic/default", "merged/ties/density=0.2", "merged/tsv_m/default",
               "merged/regmean/default", "merged/fisher/default", "merged/adamerging/batch_size=2+steps=2",
               "merged/knots/default"}
    assert set(table.system) == systems
    # weather, medical, weather_long (long-form), english, and the dataset-backed fleurs_pt, librispeech, clips
    assert len(table) == len(systems) * 7
    assert set(table[table.group == "Long-form"].test_set) == {"weather_long"}
    assert (table.reference_words > 0).all()
    recomputed = (table.substitutions + table.deletions + table.insertions) / table.reference_words
    assert recomputed.round(6).tolist() == table.wer.round(6).tolist()
    assert "WER (%)" in (results / "tables" / "wer.md").read_text()
    for figure in ("wer_by_system", "id_vs_ood", "lambda_curves", "heatmap"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 10_000, figure


def test_hypotheses_cover_the_test_split(finished):
    _, results, _ = finished
    manifest = [json.loads(line) for line in (results / "data" / "weather" / "manifest.jsonl").read_text().splitlines()]
    test_ids = [row["id"] for row in manifest if row["split"] == "test"]
    rows = [json.loads(line) for line in (results / "hypotheses" / "merged" / "tsv_m" / "default" / "weather.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == test_ids
    assert all(set(r) >= {"id", "reference", "hypothesis", "language"} for r in rows)


def test_task_arithmetic_merge_is_the_sum_of_task_vectors(finished):
    _, results, _ = finished
    merged = load_file(results / "merges" / "task_arithmetic" / "default" / "task_vector.safetensors")
    parts = [load_file(results / "task_vectors" / f"{d}.safetensors") for d in ("weather", "medical")]
    assert set(merged) == set(parts[0])
    for name, tensor in merged.items():
        assert float((tensor - parts[0][name] - parts[1][name]).abs().max()) < 1e-6, name
    assert any(float(t.abs().max()) > 0 for t in merged.values())


def test_lambda_chosen_from_validation_curve(finished):
    _, results, _ = finished
    selection = json.loads((results / "selection" / "task_arithmetic" / "default.json").read_text())
    assert [p["lambda"] for p in selection["curve"]] == [0.5, 1.0]
    best = min(selection["curve"], key=lambda p: (p["wer"], p["lambda"]))
    assert selection["chosen_lambda"] == best["lambda"]
    assert selection["validation_utterances"] == 8  # 4 per domain, validation split only


def test_each_merge_is_exported_as_the_model_its_system_was_decoded_with(finished):
    """merge.export_models: all: one transformers folder per branch, θ₀ + λ·τ at the chosen λ in the base's dtypes,
    with its provenance; the merged system's hypotheses were decoded from it."""
    from asrmerge.evaluation.selection import ScaledTaskVector
    from asrmerge.models.whisper import load_whisper

    _, results, _ = finished
    folder = results / "merged_models" / "tsv_m" / "default"
    info = json.loads((folder / "merge_info.json").read_text())
    selection = json.loads((results / "selection" / "tsv_m" / "default.json").read_text())
    assert info["method"] == "tsv_m" and info["branch"] == "tsv_m/default" and info["lambda"] == selection["chosen_lambda"]
    assert set(info["sha256"]) == {"task_vector", "model.safetensors"}
    exported = load_whisper(folder).model.state_dict()
    in_memory = ScaledTaskVector(load_whisper(results / "models" / "base"),
                                 results / "merges" / "tsv_m" / "default" / "task_vector.safetensors")
    expected = in_memory.set_lambda(info["lambda"]).model.state_dict()
    assert all(torch.equal(exported[name], expected[name]) for name in expected)


def test_every_model_folder_has_a_generation_config_true_to_its_tokenizer(finished):
    """The base, the fine-tunes and the exported merges: languages are languages, the token cap the run's."""
    from asrmerge.models.whisper import generation_config_problems, load_whisper, token_cap

    _, results, config = finished
    folders = [p.parent for p in results.rglob("generation_config.json")]
    assert len(folders) >= 4
    for folder in folders:
        whisper = load_whisper(folder)
        assert generation_config_problems(whisper) == [], folder
        cap = token_cap(whisper, config["evaluation"]["max_new_tokens"])
        assert whisper.model.generation_config.max_new_tokens == cap, folder


def test_every_job_wrote_a_log(finished):
    _, results, _ = finished
    logs = list((results / "logs").rglob("*.log"))
    assert len(logs) >= 20
    assert any("step 3/3" in p.read_text() for p in (results / "logs" / "models" / "finetuned").glob("*.log"))


def test_rerun_does_nothing(finished):
    config_path, _, _ = finished
    assert planned_jobs(config_path) == {}


def test_changing_one_hyperparameter_reruns_only_its_branch(finished):
    config_path, _, config = finished
    changed = dict(config)
    changed["merge"] = {**config["merge"], "methods": [dict(m) for m in config["merge"]["methods"]]}
    changed["merge"]["methods"][1]["params"] = {"density": 0.3}
    changed_path = config_path.with_name("changed.yaml")
    changed_path.write_text(yaml.safe_dump(changed))
    assert planned_jobs(changed_path) == {
        "merge": 1, "select_lambda": 1, "export_merged": 1, "decode_merged": 1, "score": 1, "table": 1, "figure": 4,
        "all": 1,
    }
    best = dict(config, merge={**config["merge"], "export_models": "best"})
    best_path = config_path.with_name("best.yaml")
    best_path.write_text(yaml.safe_dump(best))
    # one folder for the best branch, and nothing else: merged systems are decoded from the base and their τ in
    # either mode, so their hypotheses, scores, tables and figures stand
    assert planned_jobs(best_path) == {"export_best_merge": 1, "all": 1}


def test_supplied_fine_tunes_are_imported_not_trained(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["results"] = str(tmp_path / "results")
    config["base_model"] = {"source": "pretrained", "path": "assets/foundation", "audio_seconds": 6}
    config["finetune"]["checkpoints"] = {"weather": str(ROOT / "assets" / "foundation"),
                                         "joint": str(ROOT / "assets" / "foundation")}
    del config["finetune"]["joint"]  # nothing to train there: its settings would have no effect
    path = tmp_path / "supplied.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(path)
    assert jobs["import_finetune"] == 2
    assert jobs["finetune_domain"] == 1  # medical
    assert "finetune_joint" not in jobs


def test_supplied_fine_tunes_need_no_training_settings_and_full_ft_can_be_left_out(tmp_path):
    """Every domain fine-tune supplied and `finetune.joint: null`: nothing is trained, no training setting is asked
    for (the defaults' replay fraction needs a general set, and there is none), and no Full-FT job or system exists;
    training settings written for a stage that trains nothing are an error naming them."""
    config = yaml.safe_load(MICRO.read_text())
    config["results"] = str(tmp_path / "results")
    config["base_model"] = {"source": "pretrained", "path": "assets/foundation", "audio_seconds": 6}
    config["corpus"]["sets"] = {name: spec for name, spec in config["corpus"]["sets"].items()
                                if spec.get("role") != "general"}
    config["finetune"] = {"checkpoints": {"weather": str(ROOT / "assets" / "foundation"),
                                          "medical": str(ROOT / "assets" / "foundation")}, "joint": None}
    path = tmp_path / "supplied.yaml"
    path.write_text(yaml.safe_dump({**config, "finetune": {**config["finetune"], "domain": {"steps": 1,
                                                                                           "learning_rate": 1e-4}}}))
    result = subprocess.run([*SNAKEMAKE, "--configfile", str(path), "--dry-run"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "config key finetune.domain: has no effect" in result.stdout + result.stderr
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(path)
    assert jobs["import_finetune"] == 2
    assert "finetune_domain" not in jobs and "finetune_joint" not in jobs
    from asrmerge.workflow.experiment import Experiment

    experiment = Experiment.load(path, ROOT)
    assert "joint" not in experiment.systems and experiment.reference == "base"


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["results"] = str(tmp_path / "results")
    config["merge"]["methods"].append({"method": "ties", "params": {"density": 1.5}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([*SNAKEMAKE, "--configfile", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"merge.methods[{len(config['merge']['methods']) - 1}].params" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()
