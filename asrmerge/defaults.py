"""The configuration schema (asrmerge/schemas/config.schema.yaml), the one declaration of every default.

The workflow fills a config's missing keys from it; the Options dataclasses, the `asrmerge` command flags and the
functions that stand for a config key take theirs from it with `default`, so a default changes in the schema alone.
tests/test_defaults.py fails when a literal declares one a second time.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def parsed_schema() -> dict:
    """The schema, parsed once (read-only: `load_schema` gives a copy to modify)."""
    return yaml.load(SCHEMA_PATH.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_schema() -> dict:
    """The config schema (a fresh copy: callers may modify it)."""
    return copy.deepcopy(parsed_schema())


def _key_node(key: str) -> dict:
    """The schema node of a config key ("statistics.batch_size", or "$defs.training.lora_rank"); KeyError naming it."""
    node: Any = parsed_schema()
    parts = key.split(".")
    if parts[0] == "$defs":
        node, parts = node["$defs"][parts[1]], parts[2:]
    try:
        for part in parts:
            node = node["properties"][part]
    except (KeyError, TypeError):
        raise KeyError(f"the config schema ({SCHEMA_PATH.name}) declares no key {key!r}") from None
    return node


def default(key: str) -> Any:
    """The schema's default of a config key: "statistics.batch_size", "merge.exclude_from_svd", or a key of a shared
    definition, "$defs.training.lora_rank" (the settings of every training stage). A list comes back as a tuple
    (a default no caller can modify); a key without a default is a KeyError naming it."""
    node = _key_node(key)
    if "default" not in node:
        raise KeyError(f"the config schema ({SCHEMA_PATH.name}) declares no default for {key!r}")
    value = node["default"]
    return tuple(value) if isinstance(value, list) else copy.deepcopy(value)


def choices(key: str) -> tuple[Any, ...]:
    """The values the schema allows for a config key (its enum), e.g. "device" -> ("auto", "cpu", "cuda")."""
    node = _key_node(key)
    if "enum" not in node:
        raise KeyError(f"the config schema ({SCHEMA_PATH.name}) declares no list of values for {key!r}")
    return tuple(node["enum"])
