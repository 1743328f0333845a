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
from asrmerge.workflow.stage import (
    FromRun,
    Input,
    Pairs,
    Settings,
    Value,
    _arguments,
    _job_value,
    _takes_flag,
    rule_stages,
    run_job,
    setting,
    stages,
)


def _commands() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


def test_every_command_flag_is_a_declared_argument_with_its_default() -> None:
    """A stage's command has one flag per argument (those only a rule or the run's config gives excepted), with the
    signature's default, or none where the run's config gives it: nothing about an argument is declared twice."""
    commands = _commands()
    assert len(stages()) >= 10
    for name, declared in stages().items():
        actions = {a.dest: a for a in commands[name]._actions if a.dest not in ("help", "overwrite")}
        from_run = any(a.marker.of is not None for a in declared.arguments)
        assert from_run == ("configfile" in actions), name  # the run's config, read only where the stage uses it
        actions.pop("configfile", None)
        expected = {a.name for a in declared.arguments if _takes_flag(a)}
        assert set(actions) == expected, name
        for argument in declared.arguments:
            if argument.name not in actions or (argument.required and argument.marker.of is None):
                continue
            default = actions[argument.name].default
            if isinstance(argument.marker, (Pairs, Settings)):
                assert default == [], (name, argument.name)
            elif argument.marker.of is not None:
                assert default is None, (name, argument.name)
            elif isinstance(argument.marker, Settings):
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
    twice = _job("score", str(tmp_path / "score.log"), input={"hypotheses": ["a.jsonl"]},
                 params={"hypotheses": {"a": "a.jsonl"}}, output={"out": str(tmp_path / "s.json")})
    with pytest.raises(ValueError, match="rule score names 'hypotheses' twice"):
        run_job(twice)


def test_an_argument_the_rule_does_not_name_comes_from_the_jobs_config(tmp_path) -> None:
    """A setting the rule may omit is read from the job's config (`of`), so that changing it reruns nothing; one the
    rule names wins; one it may not omit is an error naming it."""
    from asrmerge.workflow.stage import Argument

    argument = Argument("seed", FromRun("seed", of=setting("seed"), rule_may_omit=True), int)
    run = lambda: SimpleNamespace(config={"seed": 11})  # noqa: E731
    assert _job_value(_job("x", "log"), argument, {}, run) == 11
    assert _job_value(_job("x", "log", params={"seed": 3}), argument, {}, run) == 3
    strict = Argument("seed", FromRun("seed", of=setting("seed")), int)
    with pytest.raises(ValueError, match="rule x names no input, output, param or wildcard 'seed'"):
        _job_value(_job("x", "log"), strict, {}, run)

    def without_of(seed: Annotated[int, FromRun("seed")]) -> None: ...

    with pytest.raises(TypeError, match="needs `of`"):
        _arguments(without_of)


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
