"""Configuration: schema validation with defaults, semantic checks, and what the workflow derives from a config.

All checks run before any job starts, and each failure is one `ConfigError` naming the key or file at fault.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from asrmerge.data.corpus import TEST_ROLES, default_sets, parse_spec, required_splits
from asrmerge.merging.registry import get_method, resolve_params

SCHEMA_PATH = Path(str(resources.files("asrmerge") / "schemas" / "config.schema.yaml"))
SPLITS = ("train", "validation", "test")
_PATH_SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key or file."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


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
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            sub = _resolve(sub, root)
            if key not in instance and "default" in sub:
                instance[key] = yaml.safe_load(yaml.safe_dump(sub["default"]))  # a copy, never shared
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


WORLDS = {"demo": default_sets}


def expand_world(config: dict) -> None:
    """Put the sets of `corpus.world` under `corpus.sets`, with the config's own entries over them (see the schema)."""
    corpus = config.get("corpus")
    if not isinstance(corpus, dict) or corpus.get("world") is None:
        return
    world = corpus["world"]
    if world not in WORLDS:
        raise ConfigError(f"config key corpus.world: unknown world {world!r} (known: {', '.join(WORLDS)})")
    given = corpus.get("sets") or {}
    if not isinstance(given, dict):
        raise ConfigError("config key corpus.sets: must be a mapping of set name -> set")
    sizes = corpus.get("world_sizes") or {}
    if not isinstance(sizes, dict) or not all(isinstance(value, dict) for value in sizes.values()):
        raise ConfigError("config key corpus.world_sizes: must map a role to {split: size}")
    sets = WORLDS[world]()
    for spec in sets.values():
        spec["sizes"] = dict(sizes.get(spec["role"], spec["sizes"]))
    for name, spec in given.items():
        if spec is None:
            sets.pop(name, None)
        elif name in sets and isinstance(spec, dict) and "manifest" not in spec:
            sets[name] = {**sets[name], **spec}
        else:
            sets[name] = spec
    corpus["sets"] = sets
    # Expanded: what remains is a plain list of sets (validating it again changes nothing).
    corpus["world"], corpus["world_sizes"] = None, {}


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
        return f"{self.method}/{self.label}"


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
        for combination in itertools.product(*grids):
            chosen = dict(zip(names, combination))
            try:
                params = resolve_params(method.name, chosen)
            except ValueError as err:
                raise ConfigError(f"config key {where}.params: {err}") from None
            label = ",".join(f"{n}={_format_value(v)}" for n, v in chosen.items()) or "default"
            bad = [part for part in label.split(",") if not _PATH_SAFE.match(part.replace("=", "", 1))]
            if bad:
                raise ConfigError(f"config key {where}.params: value {bad[0]!r} cannot be part of a path")
            lambdas = tuple(float(x) for x in entry.get("lambdas", method.default_lambdas))
            branches.append(MergeBranch(method.name, params, label, lambdas))
    ids = [b.id for b in branches]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ConfigError(f"config key merge.methods: the merge {duplicate} is listed twice")
    return branches


def sets_with_role(config: Mapping, *roles: str) -> list[str]:
    return [name for name, spec in config["corpus"]["sets"].items() if spec["role"] in roles]


def domains(config: Mapping) -> list[str]:
    return sets_with_role(config, "domain")


def scored_sets(config: Mapping) -> list[str]:
    """Every set scored in the tables: the domains' test splits, then the test-only sets."""
    return domains(config) + sets_with_role(config, *TEST_ROLES)


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists()


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


def check_paths(config: Mapping, workdir: Path) -> None:
    """Every file the config names must exist now, not hours into a run."""
    for name, spec in config["corpus"]["sets"].items():
        if "manifest" in spec:
            check_manifest_splits(name, spec["role"], workdir / spec["manifest"])
    base = config["base_model"]
    if base["source"] == "pretrain" and base["init"] and not (workdir / base["init"]).is_dir():
        raise ConfigError(f"config key base_model.init: folder {base['init']} does not exist")
    if base["source"] == "pretrained":
        if not base["path"]:
            raise ConfigError("config key base_model.path: required when base_model.source is pretrained")
        if _looks_local(base["path"]) and not (workdir / base["path"]).is_dir():
            raise ConfigError(f"config key base_model.path: folder {base['path']} does not exist")
    for domain, path in config["finetune"]["checkpoints"].items():
        if domain not in domains(config):
            raise ConfigError(f"config key finetune.checkpoints.{domain}: no domain set of that name")
        if _looks_local(path) and not (workdir / path).is_dir():
            raise ConfigError(f"config key finetune.checkpoints.{domain}: folder {path} does not exist")


def check_roles(config: Mapping) -> None:
    if not domains(config):
        raise ConfigError("config key corpus.sets: no set has role domain; at least one domain is needed")
    if config["base_model"]["source"] == "pretrain" and not sets_with_role(config, "general"):
        raise ConfigError("config key corpus.sets: base_model.source pretrain needs a set with role general")
    for name, spec in config["corpus"]["sets"].items():
        if "manifest" in spec:
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


def validate_config(config: dict, workdir: str | Path = ".") -> dict:
    """World, schema, roles, merge entries and paths; returns the config with defaults filled in (in place)."""
    expand_world(config)
    validate_schema(config)
    check_roles(config)
    merge_branches(config)
    check_paths(config, Path(workdir))
    return config
