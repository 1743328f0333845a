"""Configuration: schema validation with defaults, semantic checks, and what the workflow derives from a config.

All checks run before any job starts, and each failure is one `ConfigError` naming the key or file at fault.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asrmerge import layout
from asrmerge.defaults import load_schema
from asrmerge.data.corpus import TEST_ROLES, parse_spec, required_splits
from asrmerge.data.hf_dataset import DatasetSource, availability_problem
from asrmerge.data.languages import whisper_language
from asrmerge.data.manifest import validate_manifest
from asrmerge.data.user_manifest import USER_SET_SOURCES, user_set_sources
from asrmerge.data.recordings import is_recordings_spec, parse_recordings_spec
from asrmerge.data.worlds import expand_world
from asrmerge.merging.registry import get_method, resolve_params
from asrmerge.models.source import is_hub_id

SPLITS = ("train", "validation", "test")
_PATH_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")  # no layout.PARAM_SEPARATOR


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key or file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def check_config_file(path: str | Path) -> Any:
    """A config file must be YAML with every key given once: a repeated key would silently override the first.
    Returns the parsed document."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: not valid YAML ({err})") from None


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}


def fill_defaults(instance: Any, schema: Mapping, root: Mapping) -> None:
    """Insert schema defaults for missing keys, recursing into objects, arrays and $ref'd definitions."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):  # a value that may be an object or null: the object's defaults
        schema = next((option for option in map(lambda o: _resolve(o, root), schema.get("oneOf", ()))
                       if option.get("type") == "object"), schema)
        for key, sub in schema.get("properties", {}).items():
            sub = _resolve(sub, root)
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])  # a copy, never shared
            if key in instance:
                fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key, value in instance.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for item in instance:
            fill_defaults(item, schema["items"], root)


def _key(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else f".{p}")
    return "".join(parts).lstrip(".") or "(top level)"


def validate_schema(config: dict) -> dict:
    """Fill defaults then validate against the JSON schema; the first error becomes a ConfigError."""
    schema = load_schema()
    fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        raise ConfigError(f"config key {_key(error.absolute_path)}: {error.message}")
    return config


@dataclass(frozen=True)
class MergeBranch:
    """One merged task vector to build: a method with one point of its hyperparameter grid."""

    method: str
    params: dict  # every hyperparameter, defaults filled in (what the merge runs with)
    label: str  # path-safe text of the hyperparameters the config set, e.g. "density=0.2" or "default"
    lambdas: tuple[float, ...]

    @property
    def id(self) -> str:
        return layout.BRANCH.format(method=self.method, params=self.label)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def merge_branches(config: Mapping) -> list[MergeBranch]:
    """Expand `merge.methods` (lists sweep) into validated branches with unique ids."""
    branches: list[MergeBranch] = []
    for index, entry in enumerate(config["merge"]["methods"]):
        where = f"merge.methods[{index}]"
        try:
            method = get_method(entry["method"])
        except ValueError as err:
            raise ConfigError(f"config key {where}.method: {err}") from None
        explicit = entry.get("params", {})
        names = sorted(explicit)
        grids = [v if isinstance(v, list) else [v] for v in (explicit[n] for n in names)]
        empty = next((n for n, grid in zip(names, grids) if not grid), None)
        if empty is not None:
            raise ConfigError(f"config key {where}.params.{empty}: an empty list sweeps nothing (the merge would vanish)")
        lambdas = tuple(float(x) for x in entry.get("lambdas", method.default_lambdas))
        check_lambdas(lambdas, f"{where}.lambdas")
        for combination in itertools.product(*grids):
            chosen = dict(zip(names, combination))
            try:
                params = resolve_params(method.name, chosen)
            except ValueError as err:
                raise ConfigError(f"config key {where}.params: {err}") from None
            label = layout.PARAM_SEPARATOR.join(f"{n}={_format_value(v)}" for n, v in chosen.items()) or "default"
            bad = [part for part in label.split(layout.PARAM_SEPARATOR) if not _PATH_SAFE.match(part.replace("=", "", 1))]
            if bad:
                raise ConfigError(f"config key {where}.params: value {bad[0]!r} cannot be part of a path")
            branches.append(MergeBranch(method.name, params, label, lambdas))
    ids = [b.id for b in branches]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ConfigError(f"config key merge.methods: the merge {duplicate} is listed twice")
    return branches


#: The λ values a grid may hold: a merged task vector scaled by more than this is a different model, not a merge.
LAMBDA_RANGE = (0.0, 10.0)


def check_lambdas(lambdas: tuple[float, ...], key: str) -> None:
    low, high = LAMBDA_RANGE
    bad = next((x for x in lambdas if not (low < x <= high)), None)  # NaN fails every comparison
    if bad is not None:
        raise ConfigError(f"config key {key}: λ {bad!r} is outside ({low:g}, {high:g}]")
    if len(set(lambdas)) != len(lambdas):
        raise ConfigError(f"config key {key}: a λ value is listed twice")


def sets_with_role(config: Mapping, *roles: str) -> list[str]:
    return [name for name, spec in config["corpus"]["sets"].items() if spec["role"] in roles]


def domains(config: Mapping) -> list[str]:
    return sets_with_role(config, "domain")


def scored_sets(config: Mapping) -> list[str]:
    """Every set scored in the tables: the domains' test splits, then the test-only sets."""
    return domains(config) + sets_with_role(config, *TEST_ROLES)


def model_folder(path: str | None, workdir: Path) -> Path | None:
    """Where a model named in the config can be read before any job: a local folder (relative to `workdir`), or
    the local model-hub cache's snapshot of a hub id that was downloaded before; None for a hub id not cached."""
    if not path:
        return None
    if not is_hub_id(path, workdir):
        return workdir / Path(path).expanduser()
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, layout.MODEL_CONFIG)
    return Path(cached).parent if isinstance(cached, str) else None


def check_manifest_splits(name: str, role: str, path: Path) -> None:
    """A user manifest must exist and hold rows in every split its role uses: a domain without test rows would
    score 0 % WER, one without validation rows would choose λ on nothing."""
    key = f"config key corpus.sets.{name}.manifest"
    if not path.is_file():
        raise ConfigError(f"{key}: file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{key}: {path} line {line} is not UTF-8 text") from None
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            split = json.loads(line).get("split")
        except (json.JSONDecodeError, AttributeError):
            raise ConfigError(f"{key}: {path} line {number} is not a JSON object") from None
        counts[split] = counts.get(split, 0) + 1
    missing = [split for split in required_splits(role) if not counts.get(split)]
    if missing:
        raise ConfigError(f"{key}: {path} has no {missing[0]} rows, which a {role} set needs "
                          f"(rows per split: {counts or 'none'})")
    try:  # every row's fields and transcript now; its audio in the set's corpus job
        validate_manifest(path, check_audio=False)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{key}: {err}") from None


def check_dataset(name: str, spec: Mapping, workdir: Path) -> None:
    """A dataset-backed set: readable now (a local folder that exists, a hub dataset in the local cache when
    offline), with a language for its rows."""
    key = f"config key corpus.sets.{name}.dataset"
    source = spec["dataset"]
    problem = availability_problem(DatasetSource.from_spec(spec["role"], source), workdir)
    if problem:
        raise ConfigError(f"{key}.path: {problem}")
    if (source["language"] is None) == (source["language_column"] is None):
        raise ConfigError(f"{key}: give exactly one of language (every row's) and language_column")
    if source["language"] is not None:
        try:
            whisper_language(source["language"])
        except ValueError as err:
            raise ConfigError(f"{key}.language: {err}") from None
    splits = source["splits"]  # null: the role's splits under their own names
    unused = sorted(set(splits or {}) - set(required_splits(spec["role"])))
    if unused:
        raise ConfigError(f"{key}.splits.{unused[0]}: a {spec['role']} set does not use that split; remove it")
    missing = [split for split in required_splits(spec["role"]) if splits and split not in splits]
    if missing:
        raise ConfigError(f"{key}.splits: a {spec['role']} set needs a {missing[0]} split")


def check_paths(config: Mapping, workdir: Path) -> None:
    """Every file the config names must exist now, not hours into a run."""
    manifests: dict[Path, str] = {}
    for name, spec in config["corpus"]["sets"].items():
        source = user_source(spec, name)
        if source is not None:
            dead = sorted(set(spec) - USER_SET_KEYS)
            if dead:
                raise ConfigError(f"config key corpus.sets.{name}.{dead[0]}: has no effect beside `{source}:` (its "
                                  "rows say what the set holds); remove it")
        if "dataset" in spec:
            check_dataset(name, spec, workdir)
        elif "manifest" in spec:
            path = (workdir / spec["manifest"]).resolve()
            if path in manifests:
                raise ConfigError(f"config key corpus.sets.{name}.manifest: {spec['manifest']} is already the "
                                  f"manifest of set {manifests[path]} (one recording set, two roles)")
            manifests[path] = name
            check_manifest_splits(name, spec["role"], path)
    base = config["base_model"]
    if base["source"] == "pretrain" and base["init"] and not (workdir / base["init"]).is_dir():
        raise ConfigError(f"config key base_model.init: folder {base['init']} does not exist")
    if base["source"] == "pretrained":
        if not base["path"]:
            raise ConfigError("config key base_model.path: required when base_model.source is pretrained")
        if not is_hub_id(base["path"], workdir) and not (workdir / base["path"]).is_dir():
            raise ConfigError(f"config key base_model.path: folder {base['path']} does not exist")
    for model, path in config["finetune"]["checkpoints"].items():
        key = f"config key finetune.checkpoints.{model}"
        if model != layout.JOINT and model not in domains(config):
            raise ConfigError(f"{key}: no domain set of that name (nor joint)")
        if model == layout.JOINT and config["finetune"]["joint"] is None:
            raise ConfigError(f"{key}: finetune.joint is null (no Full-FT baseline); remove one of the two")
        folder = model_folder(path, workdir)
        if folder is not None:
            check_checkpoint_folder(key, folder, base_geometry(config, workdir))
        elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            raise ConfigError(f"{key}: {path} is neither a local folder nor in the local model-hub cache, and the hub "
                              "is offline (HF_HUB_OFFLINE)")


#: config.json fields two Whisper checkpoints must share to be fine-tunes of one another.
GEOMETRY_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                 "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins", "vocab_size")


def base_geometry(config: Mapping, workdir: Path) -> dict[str, Any]:
    """What is known before any job of the base model's shape: its config.json when the base is a local folder
    (a released model, or the stage a pretraining continues), else the architecture it will be pretrained with;
    and `max_source_positions`, the encoder positions the window needs."""
    base = config["base_model"]
    folder = model_folder(base["path"] if base["source"] == "pretrained" else base["init"], workdir)
    if folder is not None and (folder / layout.MODEL_CONFIG).is_file():
        known = json.loads((folder / layout.MODEL_CONFIG).read_text())
        geometry = {key: known[key] for key in GEOMETRY_KEYS if key in known}
    elif base["source"] == "pretrain":
        arch = base["architecture"]
        geometry = {"d_model": arch["d_model"], "encoder_layers": arch["encoder_layers"],
                    "decoder_layers": arch["decoder_layers"], "encoder_attention_heads": arch["attention_heads"],
                    "decoder_attention_heads": arch["attention_heads"], "encoder_ffn_dim": arch["ffn_dim"],
                    "decoder_ffn_dim": arch["ffn_dim"], "num_mel_bins": arch["num_mel_bins"]}
    else:
        geometry = {}  # a hub id not yet downloaded: checked when the import job loads both
    return geometry | {"max_source_positions": int(round(base["audio_seconds"] * 50))}


def check_checkpoint_folder(key: str, folder: Path, geometry: Mapping[str, Any]) -> None:
    """A bring-your-own fine-tune must be a Whisper folder of the base's shape reading at least its window."""
    if not folder.is_dir():
        raise ConfigError(f"{key}: folder {folder} does not exist")
    if not (folder / layout.MODEL_CONFIG).is_file():
        raise ConfigError(f"{key}: {folder} is not a transformers model folder (no config.json)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ConfigError(f"{key}: {folder} holds no weights (*.safetensors)")
    found = json.loads((folder / layout.MODEL_CONFIG).read_text())
    for name, value in geometry.items():
        if name == "max_source_positions":
            if found.get(name, value) < value:
                raise ConfigError(f"{key}: {folder} reads {found[name] / 50:g} s windows, base_model.audio_seconds "
                                  f"needs {value / 50:g} s")
        elif found.get(name) != value:
            raise ConfigError(f"{key}: {folder} is not a fine-tune of this base model ({name} {found.get(name)!r}, "
                              f"the base has {value!r})")


def trained_stages(config: Mapping) -> list[str]:
    """The fine-tuning stages (`finetune.domain`, `finetune.joint`) that train a model: their settings matter only
    then (a stage whose every model is supplied in `finetune.checkpoints` trains nothing)."""
    supplied = set(config["finetune"]["checkpoints"])
    stages = ["domain"] if set(domains(config)) - supplied else []
    return stages + ([] if layout.JOINT in supplied or config["finetune"]["joint"] is None else ["joint"])


def check_roles(config: Mapping) -> None:
    if not domains(config):
        raise ConfigError("config key corpus.sets: no set has role domain; at least one domain is needed")
    if config["merge"]["methods"] and len(domains(config)) < 2:
        raise ConfigError("config key merge.methods: merging needs at least two domains (task vectors); "
                          f"the config has {len(domains(config))}")
    if not sets_with_role(config, "general"):
        for stage in trained_stages(config):
            if config["finetune"][stage]["replay_fraction"] > 0:
                raise ConfigError(f"config key finetune.{stage}.replay_fraction: replay needs a set with role general "
                                  "(none is configured); set it to 0")
    for stage in trained_stages(config):
        options = config["finetune"][stage]
        if round(options["batch_size"] * options["replay_fraction"]) >= options["batch_size"]:
            raise ConfigError(f"config key finetune.{stage}.replay_fraction: {options['replay_fraction']} of a batch of "
                              f"{options['batch_size']} leaves no domain utterance in it")
    if config["base_model"]["source"] == "pretrain" and not sets_with_role(config, "general"):
        raise ConfigError("config key corpus.sets: base_model.source pretrain needs a set with role general")
    for name, spec in config["corpus"]["sets"].items():
        if user_source(spec, name) is not None:
            continue
        if is_recordings_spec(spec):
            try:
                parse_recordings_spec(name, spec, config["corpus"]["sets"])
            except ValueError as err:
                raise ConfigError(f"config key corpus.sets.{name}: {err}") from None
            if config["evaluation"]["long_form"] == "reject":
                raise ConfigError(f"config key evaluation.long_form: set {name} holds recordings longer than the "
                                  "window, which the default mode reject refuses; set it to vad or sequential")
            continue
        try:
            parse_spec(name, spec)  # voices, languages, text generators, channel effects
        except ValueError as err:
            raise ConfigError(f"config key corpus.sets.{name}: {err}") from None
        sizes = spec.get("sizes")
        if not sizes:
            raise ConfigError(f"config key corpus.sets.{name}: give either manifest or a generator spec with sizes")
        missing = [s for s in required_splits(spec["role"]) if not sizes.get(s)]
        if missing:
            raise ConfigError(f"config key corpus.sets.{name}.sizes.{missing[0]}: a {spec['role']} set needs it > 0")


def results_folder(value: str, workdir: Path) -> str:
    """`results` with `~` and environment variables expanded; refused when empty, an unset variable, the file system
    root, the home folder, the working directory itself, a file, or a folder holding files that are not this
    project's outputs (a folder with layout.RESULTS_MARKER, or holding only the layout's names, is a results folder)."""
    key = "config key results"
    expanded = os.path.expandvars(os.path.expanduser(value.strip()))
    if re.search(r"\$\{?\w+", expanded):
        raise ConfigError(f"{key}: {value!r} names an environment variable that is not set")
    if not expanded:
        raise ConfigError(f"{key}: empty; name a folder of its own for the run's outputs (e.g. results/demo)")
    folder = (workdir / expanded).resolve()
    if folder in (Path(folder.anchor), Path.home().resolve(), workdir.resolve()):
        raise ConfigError(f"{key}: {value!r} is {folder}, not a folder of its own; name one (e.g. results/demo)")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}: {value!r} is a file")
    if folder.is_dir() and not (folder / layout.RESULTS_MARKER).exists():
        foreign = sorted(set(os.listdir(folder)) - layout.top_level_names())
        if foreign:
            raise ConfigError(f"{key}: {folder} holds {foreign[0]}, which is not an output of this project; name a "
                              "new folder for the results")
    return expanded


#: The keys of a user set: the rest (generator keys) would have no effect beside its manifest or dataset.
USER_SET_KEYS = frozenset({"role", "description", "metric", *USER_SET_SOURCES})


def user_source(spec: Mapping, name: str = "") -> str | None:
    """`manifest` or `dataset` for a user set (both given: a ConfigError), None for a generated one."""
    given = user_set_sources(spec)
    if len(given) > 1:
        raise ConfigError(f"config key corpus.sets.{name}.{given[1]}: the set also gives {given[0]}; one source of "
                          "rows per set")
    return given[0] if given else None
#: base_model keys that only one source reads.
SOURCE_KEYS = {"pretrained": ("path",), "pretrain": ("init", "architecture", "vocab_size", "pretrain")}


def check_effective_keys(given: Mapping, config: Mapping) -> None:
    """Every key the user wrote (`given`, before defaults) takes effect where it is written: a base_model key of the
    other source, or the training settings of a stage whose every model is supplied, is an error naming it."""
    base = given.get("base_model") or {}
    source = config["base_model"]["source"]
    for other, keys in SOURCE_KEYS.items():
        for key in keys:
            if other != source and _written(base, "base_model", key) and key not in SOURCE_KEYS[source]:
                raise ConfigError(f"config key base_model.{key}: has no effect with base_model.source {source} "
                                  f"(only {other} reads it); remove it")
    finetune = given.get("finetune") or {}
    trained = trained_stages(config)
    for stage in ("domain", "joint"):
        if _written(finetune, "finetune", stage) and stage not in trained:
            raise ConfigError(f"config key finetune.{stage}: has no effect, every model of that stage is supplied in "
                              "finetune.checkpoints (nothing is trained); remove it")
    sets = config["corpus"]["sets"]
    for name, spec in sets.items():
        if spec.get("role") != "ood" or "text" not in spec:
            continue
        same = [d for d in domains(config) if _generator(sets[d]) == _generator(spec)]
        if same:
            raise ConfigError(f"config key corpus.sets.{name}: the OOD set is generated as domain {same[0]} is (same "
                              "text, voices, rate, pitch and channel): out-of-domain needs another generator")


def _written(section: Mapping, name: str, key: str) -> bool:
    """Whether the user set `name`.`key` to something other than its schema default (a config validated once holds
    the defaults: validating it again must not count them as written)."""
    if section.get(key) is None:
        return False
    root = load_schema()
    schema = _resolve(_resolve(root["properties"][name], root)["properties"][key], root)
    default = copy.deepcopy(schema.get("default"))
    fill_defaults(default, schema, root)
    return section[key] != default


def _generator(spec: Mapping) -> dict:
    """What a synthetic set's audio and text are made from (a set's role, sizes, description and metric aside)."""
    return {key: value for key, value in rows_spec(spec).items() if key not in ("role", "sizes", "description")}


def rows_spec(spec: Mapping) -> dict:
    """A set's entry without its `metric`, which only decides how the tables score it: the corpus job's param (a
    new metric does not rebuild the set)."""
    return {key: value for key, value in spec.items() if key != "metric"}


def check_devices(config: Mapping) -> None:
    """A CUDA device named where jobs run on this machine (no cluster executor) must exist here."""
    named = {key: value for key, value in (("device", config["device"]), ("merge.device", config["merge"]["device"]))
             if str(value).startswith("cuda")}
    if not named:
        return
    import torch

    if not torch.cuda.is_available():
        key, value = next(iter(named.items()))
        raise ConfigError(f"config key {key}: {value!r}, but this machine has no CUDA device; use auto or cpu (or run "
                          "on a GPU node: profiles/slurm)")


def validate_config(config: dict, workdir: str | Path = ".") -> dict:
    """World, schema, roles, merge entries and paths; returns the config with defaults filled in (in place)."""
    given = copy.deepcopy(config)
    try:
        expand_world(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    validate_schema(config)
    config["results"] = results_folder(config["results"], Path(workdir))
    check_roles(config)
    merge_branches(config)
    check_paths(config, Path(workdir))
    check_effective_keys(given, config)
    return config
