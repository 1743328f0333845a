"""The model stages as commands: fine-tune, decode and score a tiny model without Snakemake, as the rules do."""
import json

from asrmerge.cli import main
from asrmerge.evaluation.hypotheses import read_jsonl
from speech_world import build_tiny_corpus, build_tiny_whisper


def test_finetune_decode_and_score_run_as_commands(tmp_path, capsys):
    manifest = build_tiny_corpus(tmp_path / "corpus")
    build_tiny_whisper(manifest, seed=4).save(tmp_path / "base")
    assert main(["finetune", "--base", str(tmp_path / "base"), "--train", str(manifest), "--out", str(tmp_path / "ft"),
                 "--option", "steps=2", "--option", "learning_rate=1e-4", "--option", "batch_size=4",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "ft" / "loss.csv").read_text().count("\n") == 3  # header + two steps
    assert main(["decode", "--model", str(tmp_path / "ft"), "--test-set", f"weather={manifest}",
                 "--out-dir", str(tmp_path / "hyp"), "--option", "max_new_tokens=8", "--device", "cpu"]) == 0
    rows = read_jsonl(tmp_path / "hyp" / "weather.jsonl")
    assert len(rows) == 4 and all(row["reference"] for row in rows)
    assert main(["score", "--hypotheses", f"weather={tmp_path / 'hyp' / 'weather.jsonl'}",
                 "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())["weather"]
    assert sorted(scores["utterances"]) == sorted(row["id"] for row in rows)
    assert scores["total"]["reference_words"] >= len(rows)


def test_stage_commands_name_what_is_wrong(tmp_path, capsys):
    assert main(["score", "--hypotheses", "weather", "--out", str(tmp_path / "s.json")]) == 2
    assert "--hypotheses 'weather' is not NAME=PATH" in capsys.readouterr().err
    assert main(["decode", "--model", str(tmp_path), "--task-vector", "tau.safetensors", "--test-set", "a=b",
                 "--out-dir", str(tmp_path.parent / "hypotheses")]) == 2
    assert "give both or neither" in capsys.readouterr().err


def test_every_stage_of_the_workflow_is_a_command(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for command in ("corpus", "pretrain", "finetune", "task-vector", "task-spectra", "merge", "diagnose",
                    "select-lambda", "decode", "score", "table", "figure", "report-check"):
        assert f"    {command} " in listed or f"    {command}\n" in listed, command


def test_run_level_commands_name_the_missing_input(tmp_path, capsys):
    """pretrain reads the run's general sets: before the corpus exists it names the manifest and the command that
    makes it; a config error names the key."""
    import yaml

    config = yaml.safe_load(open("experiments/foundation.yaml"))
    config["results"] = str(tmp_path / "results")
    (tmp_path / "foundation.yaml").write_text(yaml.safe_dump(config))
    assert main(["pretrain", "--configfile", str(tmp_path / "foundation.yaml")]) == 2
    err = capsys.readouterr().err
    assert "general set manifest" in err and "data/general/manifest.jsonl does not exist" in err
    config["merge"] = {"methods": [{"method": "no_such_method"}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["table", "--configfile", str(tmp_path / "bad.yaml")]) == 2
    assert "no_such_method" in capsys.readouterr().err
