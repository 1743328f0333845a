"""A stage is declared once: its function's signature, annotated with what each argument is.

    @stage("score", rules=("score",), help="error counts per test set and utterance (rule score)")
    def score(hypotheses: Annotated[Mapping[str, PathLike], Pairs("NAME=FILE hypothesis files")],
              out: Annotated[PathLike, Output("score JSON")]) -> Path: ...

From that one declaration come both ways of running the stage:

- the rule's job (`run_job`, called by `scripts/stage.py`, the script of every such rule) finds each argument by its
  name among the job's input, output, params and wildcards, in that order (an argument the job does not name keeps
  its default), and calls the function inside the job's logging (asrmerge.workflow.jobs.job_logging);
- the `asrmerge` subcommand (`add_commands`) gets one flag per argument (`--name`, or the marker's `flag`), its
  default from the signature (which reads the config schema: asrmerge.defaults), its choices from the marker, and
  the output guard's roles of its paths (asrmerge.guard.declare_paths).

So adding a parameter to a stage touches the function (its signature and the code that uses it), the rule that
passes it, and nothing else. The markers say what an argument is: `Input` (a file or folder read; `many`),
`Output` (a file, or a folder written into), `Folder` (a folder written whole: the command takes --overwrite),
`Pairs` (NAME=PATH inputs, a mapping), `Settings` (KEY=VALUE settings of a config section, a mapping: the command's
repeatable `--option`), `Value` (a number, word or list: `parse` reads it from the command line) and `FromRule` (set
by the workflow only, e.g. a record of the rule's wildcards).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from asrmerge.guard import declare_paths

#: The modules whose functions are declared stages (imported on first use: their imports are lazy).
STAGE_MODULES = ("asrmerge.workflow.stages",)


@dataclass(frozen=True)
class Marker:
    """What a stage argument is; `help` is the command's help text, `flag` overrides `--name`."""

    help: str
    flag: str | None = None


@dataclass(frozen=True)
class Input(Marker):
    many: bool = False


@dataclass(frozen=True)
class Output(Marker):
    pass


@dataclass(frozen=True)
class Folder(Marker):
    pass


@dataclass(frozen=True)
class Pairs(Marker):
    pass


@dataclass(frozen=True)
class Settings(Marker):
    """KEY=VALUE settings; `raw`: the command keeps each value as written (the function reads it by its kind)."""

    flag: str | None = "--option"
    raw: bool = False


@dataclass(frozen=True)
class Value(Marker):
    """A number, word or (`many`) list of words; `parse` reads one from the command line."""

    choices: tuple[Any, ...] | None = None
    parse: Callable[[str], Any] | None = None
    many: bool = False


@dataclass(frozen=True)
class FromRule(Marker):
    pass


@dataclass(frozen=True)
class Argument:
    name: str
    marker: Marker
    annotation: Any
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def flag(self) -> str:
        return self.marker.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Stage:
    """A declared stage: `command` (the `asrmerge` subcommand), the `rules` whose job it is, its function."""

    command: str
    rules: tuple[str, ...]
    function: Callable[..., Any]
    help: str
    description: str
    threads: bool
    arguments: tuple[Argument, ...] = field(default=())

    def call(self, values: Mapping[str, Any]) -> Any:
        return self.function(**values)


_STAGES: dict[str, Stage] = {}


def stage(command: str, *, rules: tuple[str, ...], help: str, threads: bool = False) -> Callable:
    """Declare the decorated function as the stage `command` that the `rules` run; every argument of it carries a
    marker (typing.Annotated). `threads`: the job's CPU threads bound torch's (a stage that runs a model)."""

    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        if command in _STAGES:
            raise ValueError(f"stage {command!r} is declared twice")
        _STAGES[command] = Stage(command, tuple(rules), function, help, inspect.getdoc(function) or "", threads,
                                 _arguments(function))
        return function

    return declare


def _arguments(function: Callable[..., Any]) -> tuple[Argument, ...]:
    hints = typing.get_type_hints(function, include_extras=True)
    arguments = []
    for name, parameter in inspect.signature(function).parameters.items():
        metadata = [m for m in getattr(hints.get(name), "__metadata__", ()) if isinstance(m, Marker)]
        if len(metadata) != 1:
            raise TypeError(f"stage {function.__name__}: argument {name!r} needs one marker (Input, Output, ...)")
        base = typing.get_args(hints[name])[0]
        arguments.append(Argument(name, metadata[0], base, parameter.default))
    return tuple(arguments)


def stages() -> dict[str, Stage]:
    """Every declared stage, by command."""
    for module in STAGE_MODULES:
        importlib.import_module(module)
    return dict(_STAGES)


def rule_stages() -> dict[str, Stage]:
    """The declared stage of each rule that runs one, by rule."""
    return {rule: declared for declared in stages().values() for rule in declared.rules}


# ---------------------------------------------------------------------------------------------------- the rule's job


def _job_value(job: Any, argument: Argument) -> Any:
    """The argument's value as the job names it (input, output, params, wildcards), or the argument's default."""
    for section in (job.input, job.output, job.params, job.wildcards):
        if argument.name in section.keys():
            value = section.get(argument.name)
            if isinstance(argument.marker, (Input, Value)) and argument.marker.many:
                return [str(path) if isinstance(argument.marker, Input) else path for path in value]
            return str(value) if isinstance(argument.marker, (Input, Output, Folder)) else value
    if argument.required:
        raise ValueError(f"rule {job.rule} names no input, output, param or wildcard {argument.name!r}, which its "
                         "stage needs")
    return argument.default


def run_job(job: Any) -> Any:
    """Run the stage of the rule of `job` (the rule script's `snakemake` object) inside the job's logging."""
    from asrmerge.workflow.jobs import job_logging

    declared = rule_stages()[job.rule]
    with job_logging(job.log[0], job.threads if declared.threads else None, job=job):
        return declared.call({argument.name: _job_value(job, argument) for argument in declared.arguments})


# -------------------------------------------------------------------------------------------------- the command line


def _pairs(values: list[str], flag: str, form: str = "NAME=PATH") -> dict[str, str]:
    """["news=data/news/manifest.jsonl", ...] -> {"news": "data/news/manifest.jsonl", ...}."""
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {value!r} is not {form}")
        if name in pairs:
            raise ValueError(f"{flag} {name!r} is given twice")
        pairs[name] = path
    return pairs


def parse_value(text: str) -> Any:
    """A number when it reads as one ("1e-5" too, which YAML 1.1 leaves a string), else the YAML value."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _settings(values: list[str], marker: Settings, flag: str) -> dict[str, Any]:
    """["steps=100", "learning_rate=1e-5"] -> {"steps": 100, "learning_rate": 1e-05} (with `raw`: the texts)."""
    pairs = _pairs(values, flag, "KEY=VALUE")
    return pairs if marker.raw else {key: parse_value(value) for key, value in pairs.items()}


def _add_flag(parser: argparse.ArgumentParser, argument: Argument) -> None:
    marker, required = argument.marker, argument.required
    flag, dest, text = argument.flag, argument.name, marker.help
    if isinstance(marker, Input) and marker.many:
        parser.add_argument(flag, dest=dest, nargs="+" if required else "*", required=required, metavar="PATH",
                            default=None if required else list(argument.default), help=text)
    elif isinstance(marker, (Pairs, Settings)):
        parser.add_argument(flag, dest=dest, action="append", required=required and isinstance(marker, Pairs),
                            default=[], metavar="NAME=PATH" if isinstance(marker, Pairs) else "KEY=VALUE", help=text)
    elif isinstance(marker, Value):
        parse = marker.parse or (argument.annotation if argument.annotation in (int, float) else None)
        parser.add_argument(flag, dest=dest, required=required, type=parse, choices=marker.choices,
                            nargs="*" if marker.many else None, metavar="VALUE" if marker.many else None,
                            default=None if required else argument.default, help=text)
    else:
        parser.add_argument(flag, dest=dest, required=required, default=None if required else argument.default,
                            help=text)


def _command_values(declared: Stage, args: argparse.Namespace) -> dict[str, Any]:
    values = {}
    for argument in declared.arguments:
        if isinstance(argument.marker, FromRule):
            continue
        value = getattr(args, argument.name)
        if isinstance(argument.marker, Pairs):
            value = _pairs(value, argument.flag)
        elif isinstance(argument.marker, Settings):
            value = _settings(value, argument.marker, argument.flag)
        values[argument.name] = value
    return values


def _roles(declared: Stage) -> dict[str, list[str]]:
    """The output guard's roles of the stage's path arguments (asrmerge.guard.declare_paths)."""
    roles: dict[str, list[str]] = {"inputs": [], "outputs": [], "folders": [], "pairs": []}
    role_of = {Input: "inputs", Output: "outputs", Folder: "folders", Pairs: "pairs"}
    for argument in declared.arguments:
        role = role_of.get(type(argument.marker))
        if role is not None:
            roles[role].append(argument.name)
    return roles


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """One `asrmerge` subcommand per declared stage."""
    for declared in stages().values():
        rules = ("rules " if len(declared.rules) > 1 else "rule ") + ", ".join(declared.rules)
        parser = subparsers.add_parser(declared.command, help=f"{declared.help} ({rules})",
                                       description=declared.description)
        for argument in declared.arguments:
            if not isinstance(argument.marker, FromRule):
                _add_flag(parser, argument)
        declare_paths(parser, **_roles(declared))
        parser.set_defaults(func=functools.partial(_run_command, declared))


def _run_command(declared: Stage, args: argparse.Namespace) -> int:
    declared.call(_command_values(declared, args))
    return 0
