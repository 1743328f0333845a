"""Generated mutations of the demo config: each gives one clear error naming a key, or validates with the mutation
kept as written (never a crash, never a value silently dropped or changed)."""

import copy
import math
import random
from pathlib import Path

import pytest
import yaml

from asrmerge.workflow.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = 300
STRANGE_VALUES = [None, -1, 0, 0.5, 1e9, -1e-9, "", "x", "../../etc", [], {}, True, math.nan, [None], {"a": 1}]


def _paths(node, prefix=()):
    """Every key path of a nested config (mappings and lists)."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _parent(config, path):
    node = config
    for key in path[:-1]:
        node = node[key]
    return node


def _mutate(config, rng):
    """Apply one random mutation in place; returns (description, path, new value or a marker for deletion)."""
    path = rng.choice(list(_paths(config)))
    parent = _parent(config, path)
    if rng.random() < 0.25 and isinstance(parent, dict):
        del parent[path[-1]]
        return f"delete {path}", path, None
    value = copy.deepcopy(rng.choice(STRANGE_VALUES))
    parent[path[-1]] = value
    return f"set {path} = {value!r}", path, value


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("seed", range(3))
def test_mutated_configs_fail_clearly_or_keep_the_mutation(seed):
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    rng = random.Random(seed)
    kept = refused = 0
    for _ in range(MUTATIONS // 3):
        config = copy.deepcopy(demo)
        what, path, value = _mutate(config, rng)
        written = copy.deepcopy(config)
        try:
            validated = validate_config(config, ROOT)
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and message.startswith(("config key", "config file")), (what, message)
            refused += 1
            continue
        except Exception as err:  # noqa: BLE001 - any other exception is the defect this test looks for
            pytest.fail(f"{what}: {type(err).__name__}: {err}")
        kept += 1
        if value is None and path[-1] not in _parent(written, path):
            continue  # a deleted key: the schema default stands in for it, as documented
        if path[0] == "corpus":
            continue  # the world's sets are expanded and merged, checked in test_config
        assert _same(_parent(validated, path)[path[-1]], value), f"{what}: validated as {_parent(validated, path)[path[-1]]!r}"
    assert refused and kept  # the mutations exercise both outcomes
