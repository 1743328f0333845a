"""The config schema is the one declaration of every default: the Options dataclasses, the `asrmerge` flags and the
functions that stand for a config key read theirs from it (asrmerge.defaults.default), and a literal that declares
one a second time fails here, as a method's signature default that drifts from its ParamSpec fails at declaration."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from asrmerge.defaults import choices, default, parsed_schema
from asrmerge.evaluation.decoding import DecodingOptions
from asrmerge.merging.registry import get_method
from asrmerge.training.adamerging import AdaMergingOptions
from asrmerge.training.loop import TrainingOptions
from asrmerge.training.statistics import StatisticsOptions

PACKAGE = Path(__file__).resolve().parents[1] / "asrmerge"

#: Options dataclass -> the schema section its fields are keys of ("seed" is the config's top-level key).
OPTIONS_SECTIONS = {TrainingOptions: "$defs.training", StatisticsOptions: "statistics", DecodingOptions: "evaluation"}

#: Literals that look like a config key's default but are not that key: (file, function, parameter) -> why.
NOT_THE_CONFIG_KEY = {
    ("asrmerge/models/whisper.py", "feature_extractor_for", "sample_rate"): "Whisper's features are 16 kHz whatever "
    "the corpus is recorded at",
    ("asrmerge/models/whisper.py", "load_whisper", "device"): "any model's loader: on the CPU unless told",
}


def schema_leaves() -> dict[str, list[tuple[str, object]]]:
    """Key name -> [(dotted key, default)] of every schema key with a default (mappings left out)."""
    leaves: dict[str, list[tuple[str, object]]] = {}

    def walk(node: dict, path: list[str]) -> None:
        if path and "default" in node and not isinstance(node["default"], dict):
            leaves.setdefault(path[-1], []).append((".".join(path), node["default"]))
        for name, sub in node.get("properties", {}).items():
            walk(sub, [*path, name])

    schema = parsed_schema()
    walk(schema, [])
    for name, definition in schema["$defs"].items():
        walk(definition, ["$defs", name])
    return leaves


def _same(value: object, schema_value: object) -> bool:
    if isinstance(value, bool) or isinstance(schema_value, bool):
        return value is schema_value
    return (list(value) if isinstance(value, tuple) else value) == schema_value


def second_declarations(source: str, filename: str, leaves: dict[str, list[tuple[str, object]]]) -> list[str]:
    """Every literal default in `source` (a parameter's, or an argparse flag's) whose name and value are those of
    exactly one schema key: "file:line name=value repeats key"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        named: list[tuple[str, str, ast.expr]] = []
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flag = next((a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")), None)
            keywords = {k.arg: k.value for k in node.keywords}
            if flag and "default" in keywords:
                dest = ast.literal_eval(keywords["dest"]) if "dest" in keywords else flag[2:].replace("-", "_")
                named.append(("add_argument", dest, keywords["default"]))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.posonlyargs + node.args.args
            named += [(node.name, a.arg, d) for a, d in zip(positional[len(positional) - len(node.args.defaults):],
                                                             node.args.defaults)]
            named += [(node.name, a.arg, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
        for function, name, value_node in named:
            try:
                value = ast.literal_eval(value_node)
            except ValueError:
                continue  # not a literal: read from somewhere (the schema, a ParamSpec)
            keys = [key for key, schema_value in leaves.get(name, []) if _same(value, schema_value)]
            if len(keys) == 1 and (filename, function, name) not in NOT_THE_CONFIG_KEY:
                found.append(f"{filename}:{value_node.lineno} {name}={value!r} repeats the schema's {keys[0]}")
    return found


def test_no_literal_repeats_a_schema_default() -> None:
    leaves = schema_leaves()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE.parent))
        found += second_declarations(path.read_text(encoding="utf-8"), relative, leaves)
    assert not found, "read these from the schema (asrmerge.defaults.default):\n" + "\n".join(found)


def test_the_scan_finds_a_second_declaration() -> None:
    source = '''
def decode(path, *, metric="wer", tie_break: str = "largest"):
    pass

parser.add_argument("--sample-rate", type=int, default=16000)
parser.add_argument("--svd-dtype", default=default("merge.svd_dtype"))
'''
    found = second_declarations(source, "example.py", schema_leaves())
    assert found == ["example.py:2 metric='wer' repeats the schema's selection.metric",
                     "example.py:5 sample_rate=16000 repeats the schema's corpus.sample_rate"]


def _field_values(cls: type) -> dict[str, ast.expr]:
    tree = ast.parse(Path(__import__(cls.__module__, fromlist=["_"]).__file__).read_text(encoding="utf-8"))
    body = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
    return {n.target.id: n.value for n in body if isinstance(n, ast.AnnAssign) and n.value is not None}


def test_options_dataclasses_read_their_defaults_from_the_schema() -> None:
    declared = {n.name for path in PACKAGE.rglob("*.py") for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(n, ast.ClassDef) and n.name.endswith("Options")}
    assert declared == {cls.__name__ for cls in OPTIONS_SECTIONS} | {AdaMergingOptions.__name__}
    for cls, section in OPTIONS_SECTIONS.items():
        values = _field_values(cls)
        for field in dataclasses.fields(cls):
            key = "seed" if field.name == "seed" else f"{section}.{field.name}"
            try:
                expected = default(key)
            except KeyError:
                continue  # no schema default: a required field (steps, learning_rate)
            assert field.default == expected, (cls.__name__, field.name)
            value = values[field.name]
            assert isinstance(value, ast.Call) and getattr(value.func, "id", "") == "default", (
                f"{cls.__name__}.{field.name} declares its default again instead of reading {key} from the schema")


def test_adamerging_options_are_the_registered_methods_parameters() -> None:
    params = get_method("adamerging").params
    options = AdaMergingOptions()
    assert {name: getattr(options, name) for name in params} == {name: spec.default for name, spec in params.items()}


def test_a_key_without_a_default_is_named() -> None:
    assert default("merge.exclude_from_svd") == ("embed_tokens", "embed_positions", "proj_out")
    assert default("$defs.training.lora_targets") == ("q_proj", "v_proj")
    with pytest.raises(KeyError, match="no key 'statistics.nothing'"):
        default("statistics.nothing")
    with pytest.raises(KeyError, match=r"no default for '\$defs.training.steps'"):
        default("$defs.training.steps")


def test_choices_come_from_the_schema_and_the_stage_commands_offer_them() -> None:
    """A command's choices of a config key are the schema's enum (asrmerge.defaults.choices), as its default is."""
    from asrmerge.cli import build_parser

    assert choices("device") == ("auto", "cpu", "cuda")
    with pytest.raises(KeyError, match="no list of values for 'seed'"):
        choices("seed")
    commands = build_parser()._subparsers._group_actions[0].choices
    flags = {a.dest: a for a in commands["select-lambda"]._actions}
    assert tuple(flags["metric"].choices) == choices("selection.metric")
    assert flags["metric"].default == default("selection.metric")
    assert tuple({a.dest: a for a in commands["decode"]._actions}["device"].choices) == choices("device")
