"""The model stages as commands: fine-tune, decode and score a tiny model without Snakemake, as the rules do."""
import json

from asrmerge.cli import main
from asrmerge.evaluation.hypotheses import read_jsonl
from speech_world import build_tiny_corpus, build_tiny_whisper, micro_config_file


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


def test_the_commands_of_the_rules_that_lacked_one(tmp_path, capsys):
    """import-finetune, check-splits, adamerging-coefficients and corpus with a long-form set run as their rules'
    jobs do (every rule has a command: tests/test_rules.py)."""
    from safetensors.torch import load_file
    from speech_world import task_vectors_by_command

    manifest = build_tiny_corpus(tmp_path / "corpus")
    build_tiny_whisper(manifest, seed=4).save(tmp_path / "base")
    build_tiny_whisper(manifest, seed=5).save(tmp_path / "user_ft")
    assert main(["import-finetune", "--checkpoint", str(tmp_path / "user_ft"), "--base", str(tmp_path / "base"),
                 "--out", str(tmp_path / "ft")]) == 0
    assert (tmp_path / "ft" / "model.safetensors").is_file()

    assert main(["check-splits", "--set", f"weather={manifest}", "--out", str(tmp_path / "splits.json")]) == 0
    assert json.loads((tmp_path / "splits.json").read_text())
    assert main(["check-splits", "--set", "weather", "--out", str(tmp_path / "bad.json")]) == 2
    assert "--set 'weather' is not NAME=PATH" in capsys.readouterr().err

    taus = task_vectors_by_command(tmp_path / "base", [tmp_path / "ft", tmp_path / "ft"], tmp_path / "taus")
    assert main(["adamerging-coefficients", "--base", str(tmp_path / "base"), "--task-vectors", *map(str, taus),
                 "--validation", str(manifest), "--out", str(tmp_path / "coefficients.safetensors"),
                 "--summary", str(tmp_path / "coefficients.json"), "--option", "steps=1", "--option", "batch_size=2",
                 "--option", "granularity=task", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert load_file(tmp_path / "coefficients.safetensors")

    config = micro_config_file(tmp_path)
    corpus = ["corpus", "--configfile", str(config), "--set", "weather_long", "--out", str(tmp_path / "long")]
    assert main(corpus) == 2  # its source, the run's weather set, is not built yet
    assert "joins the test utterances of set 'weather', whose manifest" in capsys.readouterr().err
    assert main([*corpus, "--recordings-source", str(manifest)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "long" / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(row["split"] == "test" for row in rows)
    assert main(["corpus", "--configfile", str(config), "--set", "french"]) == 2
    assert "set 'french' is not in config corpus.sets" in capsys.readouterr().err


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
