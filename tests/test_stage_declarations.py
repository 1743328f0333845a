"""A stage is declared once (asrmerge.workflow.stage): the rule's job and the `asrmerge` command both come from the
function's signature, and give the same result."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace
from typing import Annotated

import pytest
from snakemake.iocontainers import Namedlist

from asrmerge.cli import build_parser, main
from asrmerge.evaluation.hypotheses import write_jsonl
from asrmerge.workflow.stages import RECIPE_FIXES
from asrmerge.workflow.stage import FromRule, Input, Settings, Value, _arguments, rule_stages, run_job, stages


def _commands() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


def test_every_command_flag_is_a_declared_argument_with_its_default() -> None:
    """A stage's command has one flag per argument (FromRule ones excepted), with the signature's default: nothing
    about an argument is declared a second time."""
    commands = _commands()
    assert len(stages()) >= 10
    for name, declared in stages().items():
        actions = {a.dest: a for a in commands[name]._actions if a.dest not in ("help", "overwrite")}
        expected = {a.name for a in declared.arguments if not isinstance(a.marker, FromRule)}
        assert set(actions) == expected, name
        for argument in declared.arguments:
            if argument.name not in actions or argument.required:
                continue
            default = actions[argument.name].default
            if isinstance(argument.marker, Settings):
                assert default == [], (name, argument.name)
            elif isinstance(argument.marker, Input) and argument.marker.many:
                assert list(default) == list(argument.default), (name, argument.name)
            else:
                assert default == argument.default, (name, argument.name)


def test_an_argument_without_a_marker_is_refused() -> None:
    def unmarked(base: Annotated[str, Input("a file")], seed: int = 0) -> None: ...

    def marked_twice(base: Annotated[str, Input("a file"), Value("a word")]) -> None: ...

    for function in (unmarked, marked_twice):
        with pytest.raises(TypeError, match="needs one marker"):
            _arguments(function)


def _job(rule: str, log: str, **sections: dict) -> SimpleNamespace:
    parts = {key: Namedlist(fromdict=sections.get(key, {})) for key in ("input", "output", "params", "wildcards")}
    return SimpleNamespace(rule=rule, log=[log], threads=1, **parts)


def test_the_rule_job_and_the_command_write_the_same_file(tmp_path) -> None:
    rows = [{"id": "u1", "language": "en", "reference": "the cat sat", "hypothesis": "the cat sat down", "flags": []},
            {"id": "u2", "language": "en", "reference": "a dog", "hypothesis": "a dog", "flags": []}]
    write_jsonl(rows, tmp_path / "weather.jsonl")
    hypotheses = {"weather": str(tmp_path / "weather.jsonl")}
    job = _job("score", str(tmp_path / "score.log"), input={"files": list(hypotheses.values())},
               output={"out": str(tmp_path / "by_rule.json")}, params={"hypotheses": hypotheses})
    run_job(job)
    assert main(["score", "--hypotheses", f"weather={hypotheses['weather']}", "--out", str(tmp_path / "by_command.json")]) == 0
    assert (tmp_path / "by_rule.json").read_bytes() == (tmp_path / "by_command.json").read_bytes()
    assert json.loads((tmp_path / "by_rule.json").read_text())["weather"]["total"]["insertions"] == 1


def test_a_rule_that_does_not_name_a_needed_argument_is_named(tmp_path) -> None:
    job = _job("score", str(tmp_path / "score.log"), output={"out": str(tmp_path / "s.json")})
    with pytest.raises(ValueError, match="rule score names no input, output, param or wildcard 'hypotheses'"):
        run_job(job)


def test_every_declared_function_is_documented_and_each_rule_has_one_stage() -> None:
    by_rule = rule_stages()
    assert sum(len(declared.rules) for declared in stages().values()) == len(by_rule)
    for declared in stages().values():
        assert declared.description and declared.help, declared.command
        assert list(inspect.signature(declared.function).parameters) == [a.name for a in declared.arguments]


def _other_value(argument) -> list[str]:
    """Command-line words that give `argument` a value other than its default."""
    marker = argument.marker
    if isinstance(marker, Settings):
        return ["key=1"]
    if isinstance(marker, Value) and marker.choices:
        return [next(str(c) for c in marker.choices if c != argument.default)]
    if isinstance(marker, Value) and marker.many:
        return ["other"]
    if isinstance(marker, Value):
        return ["2"] if argument.annotation in (int, float) or marker.parse else ["other"]
    return ["some/path"]


@pytest.mark.parametrize("name", RECIPE_FIXES)
def test_every_argument_a_recipe_fixes_is_refused_beside_it(tmp_path, capsys, name) -> None:
    """`merge --recipe` refuses each argument the recipe fixes, named by its own flag (from the declaration)."""
    argument = {a.name: a for a in stages()["merge"].arguments}[name]
    code = main(["merge", "--recipe", str(tmp_path / "r.json"), "--out-model", str(tmp_path / "m"), argument.flag,
                 *_other_value(argument)])
    assert code == 2 and f"--recipe fixes {argument.flag}:" in capsys.readouterr().err
