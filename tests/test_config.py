"""Configuration validation: defaults, schema errors, semantic errors, merge branch expansion."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrmerge.workflow.config import ConfigError, check_config_file, load_schema, merge_branches, scored_sets, validate_config
from asrmerge.data.corpus import ROLES, TEST_ROLES
from asrmerge.data.manifest import SPLITS
from asrmerge.data.text import EP_DOMAINS
from asrmerge.data.worlds import default_sets
from asrmerge.report.tables import GROUP_OF_ROLE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_demo_config_is_valid(demo_config):
    config = validate_config(demo_config, ROOT)
    assert config["merge"]["svd_dtype"] == "float32"  # filled from the schema
    assert config["finetune"]["domain"]["gradient_accumulation"] == 1  # default inside a $ref'd definition
    assert scored_sets(config)[:2] == ["news", "parliament"]


def test_lora_overlay_on_the_demo_config_is_valid(demo_config):
    """experiments/demo-lora.yaml is read after config.yaml, merged by Snakemake mapping by mapping."""
    from snakemake.utils import update_config

    update_config(demo_config, yaml.safe_load((ROOT / "experiments" / "demo-lora.yaml").read_text()))
    config = validate_config(demo_config, ROOT)
    assert config["results"] == "results/demo-lora" and "news" in config["corpus"]["sets"]
    assert config["finetune"]["domain"]["mode"] == "lora" and config["finetune"]["domain"]["steps"] == 60
    assert config["finetune"]["joint"]["mode"] == "full"
    assert "knots/default" in {branch.id for branch in merge_branches(config)}


def test_validating_a_config_imports_neither_torch_nor_scipy_signal():
    # The workflow validates the config on every invocation (dry runs included); torch and scipy.signal cost seconds
    # and are only needed inside jobs (asrmerge.lazy_import).
    script = (
        "import sys, yaml; from pathlib import Path; from asrmerge.workflow.config import validate_config, merge_branches; "
        f"config = validate_config(yaml.safe_load(Path({str(ROOT / 'config.yaml')!r}).read_text()), Path({str(ROOT)!r})); "
        "assert merge_branches(config); "
        "print(sorted(m for m in ('torch._C', 'scipy.signal._signaltools', 'safetensors') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def _every_property(schema, path="config"):
    node = schema
    for key, sub in node.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _every_property(sub, f"{path}.{key}")


def test_every_schema_key_has_description_and_default():
    schema = load_schema()
    for key, sub in _every_property(schema):
        assert "description" in sub, key
    for key, sub in schema["properties"].items():
        assert "default" in sub, key


@pytest.mark.parametrize(
    "mutate, culprit",
    [
        (lambda c: c["merge"]["methods"].insert(0, {"method": "no_such_method"}), "merge.methods[0].method"),
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c["finetune"]["domain"].update(steps=-1), "finetune.domain.steps"),
        (lambda c: c["corpus"].update(sets={"weather": {"sizes": {"train": -5}}}), "corpus.sets.weather.sizes.train"),
        (lambda c: c["corpus"].update(world="demo2"), "corpus.world"),
        (lambda c: c["corpus"].update(world_sizes={"domain": 3}), "corpus.world_sizes"),
        (lambda c: c["corpus"]["world_sizes"].update(general={"train": 0}), "corpus.sets.general: .*every split is empty"),
        (lambda c: c["corpus"].setdefault("sets", {}).update(extra={"role": "ood", "manifest": "missing/manifest.jsonl"}),
         "missing/manifest.jsonl"),
        (lambda c: c["base_model"].update(source="pretrained", path="./no/such/folder"), "base_model.path"),
        (lambda c: c["finetune"].update(checkpoints={"weather": "./nowhere"}), "finetune.checkpoints.weather"),
        (lambda c: c["merge"]["methods"].append({"method": "ties", "params": {"density": 1.5}}), "density"),
        (lambda c: c["merge"]["methods"].append({"method": "ties", "params": {"density": []}}),
         r"params.density: an empty list"),
        (lambda c: c["merge"]["methods"].append({"method": "ties", "lambdas": [0.5, 25.0]}), r"lambdas: λ 25.0 is outside"),
        (lambda c: c["merge"]["methods"].append({"method": "ties", "lambdas": [0.0]}), r"lambdas: λ 0.0 is outside"),
        (lambda c: c["merge"]["methods"].append({"method": "ties", "lambdas": [0.5, 0.5]}), "listed twice"),
        (lambda c: c["corpus"].setdefault("sets", {}).update({d: None for d in EP_DOMAINS[1:]}),
         "merge.methods: merging needs at least two domains"),
        (lambda c: c["corpus"].setdefault("sets", {}).update(general=None, general_pt=None),
         "finetune.domain.replay_fraction: replay needs a set with role general"),
        (lambda c: c["finetune"]["joint"].update(replay_fraction=0.97), "finetune.joint.replay_fraction: 0.97 of a batch"),
        (lambda c: c["finetune"]["domain"].update(replay_fraction=1.0), "finetune.domain.replay_fraction"),
    ],
)
def test_bad_config_names_the_culprit(demo_config, mutate, culprit):
    mutate(demo_config)
    with pytest.raises(ConfigError, match=culprit.replace("[", r"\[").replace("]", r"\]")):
        validate_config(demo_config, ROOT)


def test_world_is_sized_and_overridden_by_the_config(demo_config):
    demo_config["corpus"]["sets"] = {
        "weather": {"sizes": {"train": 7, "validation": 2, "test": 3}},  # replaces only the keys given
        "ood_tourism_hall": None,  # left out
        "mine": {"role": "ood", "language": "pt", "text": "tourism", "sizes": {"test": 4}},  # added
    }
    sizes = demo_config["corpus"]["world_sizes"]
    sets = validate_config(demo_config, ROOT)["corpus"]["sets"]
    world = default_sets()
    assert sets["weather"] == {**world["weather"], "sizes": {"train": 7, "validation": 2, "test": 3}}
    assert sets["news"]["sizes"] == sizes["domain"]
    assert "ood_tourism_hall" not in sets and sets["mine"]["sizes"] == {"test": 4}
    assert list(sets)[: len(EP_DOMAINS)] == list(EP_DOMAINS)
    assert validate_config(copy.deepcopy(demo_config), ROOT)["corpus"]["sets"] == sets  # expanding twice: same


@pytest.mark.parametrize("role, splits, missing", [("domain", ["train", "validation"], "test"),
                                                    ("domain", ["train", "test"], "validation"),
                                                    ("ood", ["train"], "test")])
def test_user_manifest_without_a_split_its_role_needs_is_refused(demo_config, tmp_path, role, splits, missing):
    manifest = tmp_path / "mine.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"u{i}", "split": split}) + "\n" for i, split in enumerate(splits)))
    demo_config["corpus"]["sets"] = {"mine": {"role": role, "manifest": str(manifest)}}
    with pytest.raises(ConfigError, match=rf"corpus.sets.mine.manifest: .*mine.jsonl has no {missing} rows"):
        validate_config(demo_config, ROOT)


def _manifest_row(row_id: str, split: str) -> dict:
    """A manifest row whose fields are sound (its audio is checked by the corpus job, not here)."""
    return {"id": row_id, "audio": f"{row_id}.wav", "text": "bom dia", "duration": 1.0, "set": "mine", "split": split,
            "language": "pt"}


def test_a_user_manifest_row_at_fault_is_named_when_the_config_is_checked(demo_config, tmp_path):
    manifest = tmp_path / "mine.jsonl"
    rows = [_manifest_row(f"u{i}", s) for i, s in enumerate(SPLITS)]
    rows[1]["language"] = "portuguese"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    demo_config["corpus"]["sets"] = {"mine": {"role": "domain", "manifest": str(manifest)}}
    with pytest.raises(ConfigError, match=r"corpus.sets.mine.manifest: .*line 2.*u1.*'portuguese'"):
        validate_config(demo_config, ROOT)


def test_an_accented_user_set_is_scored_in_its_own_column(demo_config, tmp_path):
    manifest = tmp_path / "african.jsonl"
    manifest.write_text(json.dumps(_manifest_row("u0", "test")) + "\n")
    demo_config["corpus"]["sets"] = {"pt_african": {"role": "accented", "manifest": str(manifest)}}
    validate_config(demo_config, ROOT)
    assert "pt_african" in scored_sets(demo_config)
    assert GROUP_OF_ROLE["accented"] == "Accented"


def test_roles_have_one_home():
    """The schema's role enums and the report's column groups follow asrmerge.data.corpus.ROLES."""
    set_schema = load_schema()["properties"]["corpus"]["properties"]
    assert set_schema["sets"]["additionalProperties"]["properties"]["role"]["enum"] == list(ROLES)
    # long_form sets are made of another set's test split: they have no sizes
    assert set(set_schema["world_sizes"]["propertyNames"]["enum"]) == set(ROLES) - {"long_form"}
    assert set(GROUP_OF_ROLE) == set(ROLES) - {"general"}
    assert set(TEST_ROLES) == set(ROLES) - {"domain", "general"}


def test_grid_expands_to_readable_unique_paths(demo_config):
    demo_config["merge"]["methods"] = [
        {"method": "ties", "params": {"density": [0.2, 0.5]}},
        {"method": "task_arithmetic"},
    ]
    validate_config(demo_config, ROOT)
    ids = [b.id for b in merge_branches(demo_config)]
    assert ids == ["ties/density=0.2", "ties/density=0.5", "task_arithmetic/default"]


def test_duplicate_merge_is_rejected(demo_config):
    demo_config["merge"]["methods"] = [{"method": "task_arithmetic"}, {"method": "task_arithmetic"}]
    with pytest.raises(ConfigError, match="listed twice"):
        validate_config(copy.deepcopy(demo_config), ROOT)


def test_one_manifest_for_two_sets_is_refused(demo_config, tmp_path):
    manifest = tmp_path / "mine.jsonl"
    manifest.write_text("".join(json.dumps(_manifest_row(f"u{i}", s)) + "\n" for i, s in enumerate(SPLITS)))
    demo_config["corpus"]["sets"] = {"mine": {"role": "domain", "manifest": str(manifest)},
                                     "again": {"role": "ood", "manifest": str(manifest)}}
    with pytest.raises(ConfigError, match="corpus.sets.again.manifest: .* already the manifest of set mine"):
        validate_config(demo_config, ROOT)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("results: a\nfinetune:\n  domain: {steps: 3}\n  domain: {steps: 4}\n")
    with pytest.raises(ConfigError, match=r"config.yaml: key 'domain' is given twice \(lines 3 and 4\)"):
        check_config_file(path)
    path.write_text("results: [a\n")
    with pytest.raises(ConfigError, match="config.yaml: not valid YAML"):
        check_config_file(path)
    check_config_file(ROOT / "config.yaml")


def test_a_hub_id_fine_tune_is_checked_from_the_local_cache_or_refused_offline(demo_config, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    demo_config["finetune"]["checkpoints"] = {"weather": "someone/whisper-weather"}
    with pytest.raises(ConfigError, match="finetune.checkpoints.weather: someone/whisper-weather is neither a local "
                                          "folder nor in the local model-hub cache"):
        validate_config(demo_config, ROOT)
    snapshot = tmp_path / "hub" / "models--someone--whisper-weather" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    base = json.loads((ROOT / "assets" / "foundation" / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**base, "d_model": 64}))
    (snapshot / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="finetune.checkpoints.weather: .* is not a fine-tune of this base model"):
        validate_config(demo_config, ROOT)
    (snapshot / "config.json").write_text(json.dumps(base))
    validate_config(demo_config, ROOT)


def test_a_given_fine_tune_is_checked_against_the_base_before_any_job(demo_config, tmp_path):
    """Shape and window of a bring-your-own fine-tune (and of a joint one) are read from its config.json."""
    base = json.loads((ROOT / "assets" / "foundation" / "config.json").read_text())
    cases = {
        "empty": (None, "not a transformers model folder"),
        "deeper": ({**base, "decoder_layers": base["decoder_layers"] + 1}, f"decoder_layers {base['decoder_layers'] + 1}"),
        "shorter": ({**base, "max_source_positions": 150}, "reads 3 s windows, base_model.audio_seconds needs 6 s"),
    }
    for name, (model_config, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        if model_config is not None:
            (folder / "config.json").write_text(json.dumps(model_config))
            (folder / "model.safetensors").write_bytes(b"")
        config = copy.deepcopy(demo_config)
        config["finetune"]["checkpoints"] = {"joint": str(folder)}
        with pytest.raises(ConfigError, match=f"finetune.checkpoints.joint: .*{message}"):
            validate_config(config, ROOT)
    longer = tmp_path / "longer"
    longer.mkdir()
    (longer / "config.json").write_text(json.dumps({**base, "max_source_positions": 1500}))
    (longer / "model.safetensors").write_bytes(b"")
    demo_config["finetune"]["checkpoints"] = {"weather": str(longer), "joint": str(longer)}
    with pytest.raises(ConfigError, match="config key finetune.joint: has no effect"):
        validate_config(copy.deepcopy(demo_config), ROOT)  # the demo's joint settings: nothing to train now
    del demo_config["finetune"]["joint"]
    validate_config(demo_config, ROOT)  # a longer window is sliced like the base's


#: A value of each generator key that the schema accepts: only its place beside `manifest:` is wrong.
GENERATOR_VALUES = {"language": "pt", "text": "weather", "voices": ["pt"], "rate": [150, 160], "pitch": [40, 50],
                    "channel": [{"type": "telephone"}], "sizes": {"test": 3}, "max_duration": 4.0}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(sorted(GENERATOR_VALUES)), min_size=1, max_size=3, unique=True))
def test_generator_keys_beside_a_manifest_are_refused(demo_config, tmp_path_factory, keys):
    manifest = tmp_path_factory.mktemp("user") / "mine.jsonl"
    manifest.write_text("".join(json.dumps(_manifest_row(f"u{i}", s)) + "\n" for i, s in enumerate(SPLITS)))
    config = copy.deepcopy(demo_config)
    config["corpus"]["sets"] = {"mine": {"role": "domain", "manifest": str(manifest),
                                         **{key: GENERATOR_VALUES[key] for key in keys}}}
    with pytest.raises(ConfigError, match=rf"corpus.sets.mine.{sorted(keys)[0]}: has no effect beside `manifest:`"):
        validate_config(config, ROOT)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["init", "vocab_size", "architecture", "pretrain"]))
def test_base_model_keys_of_the_other_source_are_refused(demo_config, key):
    values = {"init": "assets/foundation", "vocab_size": 512, "architecture": {"d_model": 64},
              "pretrain": {"steps": 5, "learning_rate": 1e-3}}
    config = copy.deepcopy(demo_config)  # source: pretrained
    config["base_model"][key] = values[key]
    with pytest.raises(ConfigError, match=rf"config key base_model.{key}: has no effect with base_model.source "
                                          "pretrained"):
        validate_config(config, ROOT)


@pytest.mark.parametrize("export_models", ["all", "best"])
def test_an_export_goes_where_the_export_rules_write_it(demo_config, export_models) -> None:
    """The export-merge command's folder is the rule's: one branch under `all` its own folder, every branch under
    `best` (even a config with one branch) the best one's."""
    from asrmerge import layout
    from asrmerge.workflow.experiment import Experiment

    for methods in ([{"method": "task_arithmetic"}], [{"method": "task_arithmetic"}, {"method": "ties"}]):
        config = copy.deepcopy(demo_config)
        config["merge"].update(methods=methods, export_models=export_models)
        run = Experiment(validate_config(config, ROOT))
        branches = list(run.branches)
        folders = {run.export_folder([b]) for b in branches} if export_models == "all" else {run.export_folder(branches)}
        rule_writes = ({run.result(layout.MERGED_MODEL, branch=b) for b in branches} if export_models == "all"
                       else {run.result(layout.BEST_MERGED_MODEL)})  # rules/merge.smk's outputs
        assert folders == rule_writes
