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
  the output guard's check of its paths (asrmerge.guard.check_paths), those derived from the run included.

So adding a parameter to a stage touches the function (its signature and the code that uses it), the rule that
passes it, and nothing else. The markers say what an argument is: `Input` (a file or folder read; `many`),
`Output` (a file, or a folder written into), `OutputFiles` (the job's named outputs, a mapping), `Folder` (a folder
written whole: the command takes --overwrite), `Pairs` (NAME=PATH inputs, a mapping), `Settings` (KEY=VALUE settings
of a config section, a mapping: the command's repeatable `--option`), `Value` (a number, word or list: `parse` reads
it from the command line), `FromRun` (what the rule passes, or else the run's config gives: no flag) and `FromRule`
(set by the workflow only, e.g. a record of the rule's wildcards).

A marker's `of(run, values)` derives the argument from the run (an asrmerge.workflow.experiment.Experiment) and the
arguments before it: the command reads the run's config from `--configfile` (validated as the workflow validates it)
and uses `of` for every such argument not given on its command line, so a stage that acts on a whole run (its
tables, its base model, a set of its corpus) takes the files the rule would; a job uses `of` on its own config for an
argument its rule may omit (`rule_may_omit`: a setting that must not rerun the job when it changes).
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

from asrmerge.guard import check_paths, overwrite_argument

#: The modules whose functions are declared stages, by name: the workflow's and the report's (a run's exports,
#: tables and figures), imported on first use.
STAGE_MODULES = ("asrmerge.workflow.stages", "asrmerge.report.stages")


#: of(run, values): an argument derived from the run (Experiment) and the arguments read before it.
FromRunConfig = Callable[[Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Marker:
    """What a stage argument is; `help` is the command's help text, `flag` overrides `--name`, `of` derives it from
    the run when the command is not given it (module docstring). `rule_may_omit`: a job whose rule does not name it
    derives it with `of` from its own config (a setting whose change must not rerun the job, an input only some of
    the rule's jobs have); any other argument without a default the rule must name."""

    help: str
    flag: str | None = None
    of: FromRunConfig | None = None
    rule_may_omit: bool = False


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
class OutputFiles(Marker):
    """Named output files, a mapping: the job's outputs by their names; the command's from `of`."""


@dataclass(frozen=True)
class FromRun(Marker):
    """No flag: the value the rule passes, or else `of` of the run's config."""


@dataclass(frozen=True)
class FromRule(Marker):
    pass


def setting(key: str) -> FromRunConfig:
    """`of` of a config key ("corpus.sample_rate"): its value in the run's config."""

    def of(run: Any, values: Mapping[str, Any]) -> Any:
        node = run.config
        for part in key.split("."):
            node = node[part]
        return node

    return of


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
        if isinstance(metadata[0], (FromRun, OutputFiles)) and metadata[0].of is None:
            raise TypeError(f"stage {function.__name__}: argument {name!r} needs `of`, what the command derives it from")
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


def _job_value(job: Any, argument: Argument, values: Mapping[str, Any], run: Callable[[], Any]) -> Any:
    """The argument's value as the job names it (input, output, params, wildcards), else as `of` derives it from the
    job's config where the rule may omit it, else the argument's default."""
    if isinstance(argument.marker, OutputFiles):
        return {name: str(path) for name, path in job.output.items()}
    sections = [section for section in (job.input, job.output, job.params, job.wildcards)
                if argument.name in section.keys()]
    # the files as inputs and their mapping as a param: which one the stage gets would be unclear (a wildcard of the
    # same name is a part of the path it names)
    if len([section for section in sections if section is not job.wildcards]) > 1:
        raise ValueError(f"rule {job.rule} names {argument.name!r} twice (as an input, output or param)")
    if sections:
        value = sections[0].get(argument.name)
        if isinstance(argument.marker, (Input, Value)) and argument.marker.many:
            return [str(path) if isinstance(argument.marker, Input) else path for path in value]
        return str(value) if isinstance(argument.marker, (Input, Output, Folder)) else value
    if argument.marker.of is not None and argument.marker.rule_may_omit:
        return argument.marker.of(run(), values)
    if argument.required or argument.marker.of is not None:
        raise ValueError(f"rule {job.rule} names no input, output, param or wildcard {argument.name!r}, which its "
                         "stage needs")
    return argument.default


def run_job(job: Any) -> Any:
    """Run the stage of the rule of `job` (the rule script's `snakemake` object) inside the job's logging."""
    from asrmerge.workflow.jobs import job_logging

    declared = rule_stages()[job.rule]
    with job_logging(job.log[0], job.threads if declared.threads else None, job=job):
        run = functools.cache(lambda: _experiment(job.config))
        values: dict[str, Any] = {}
        for argument in declared.arguments:
            values[argument.name] = _job_value(job, argument, values, run)
        return declared.call(values)


def _experiment(config: Mapping[str, Any]) -> Any:
    from asrmerge.workflow.experiment import Experiment

    return Experiment(config)


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


def _takes_flag(argument: Argument) -> bool:
    return not isinstance(argument.marker, (FromRule, FromRun, OutputFiles))


def _add_flag(parser: argparse.ArgumentParser, argument: Argument) -> None:
    marker = argument.marker
    flag, dest, text = argument.flag, argument.name, marker.help
    # an argument the run derives (`of`) has no default here: not given, it comes from the run's config
    required = argument.required and marker.of is None
    default = None if argument.required or marker.of is not None else argument.default
    if marker.of is not None:
        text += " (default: the run's, from --configfile)"
    if isinstance(marker, Input) and marker.many:
        parser.add_argument(flag, dest=dest, nargs="+" if required else "*", required=required, metavar="PATH",
                            default=None if default is None else list(default), help=text)
    elif isinstance(marker, (Pairs, Settings)):
        parser.add_argument(flag, dest=dest, action="append", required=required and isinstance(marker, Pairs),
                            default=[], metavar="NAME=PATH" if isinstance(marker, Pairs) else "KEY=VALUE", help=text)
    elif isinstance(marker, Value):
        parse = marker.parse or (argument.annotation if argument.annotation in (int, float) else None)
        parser.add_argument(flag, dest=dest, required=required, type=parse, choices=marker.choices,
                            nargs="*" if marker.many else None, metavar="VALUE" if marker.many else None,
                            default=default, help=text)
    else:
        parser.add_argument(flag, dest=dest, required=required, default=default, help=text)


def _given(argument: Argument, args: argparse.Namespace) -> Any:
    """The argument's value as the command line gives it; None when not given."""
    if not _takes_flag(argument):
        return None
    value = getattr(args, argument.name)
    if isinstance(argument.marker, Pairs):
        return _pairs(value, argument.flag) or None
    if isinstance(argument.marker, Settings):
        return _settings(value, argument.marker, argument.flag) or None
    return value


def _command_values(declared: Stage, args: argparse.Namespace) -> dict[str, Any]:
    """The stage's arguments: as given on the command line, else derived from the run (`of`), else the default."""
    run = functools.cache(lambda: _load_experiment(args.configfile))
    values: dict[str, Any] = {}
    for argument in declared.arguments:
        value = _given(argument, args)
        if value is None and argument.marker.of is not None:
            value = argument.marker.of(run(), values)
        elif value is None:  # no flag given: none of NAME=VALUE pairs, else the signature's default
            value = {} if isinstance(argument.marker, (Pairs, Settings)) else argument.default
        values[argument.name] = value
    return values


def _load_experiment(configfile: str) -> Any:
    from asrmerge.workflow.experiment import Experiment

    return Experiment.load(configfile)


#: The output guard's role of each kind of path argument (asrmerge.guard.check_paths).
GUARD_ROLES = {Input: "inputs", Pairs: "inputs", Output: "outputs", OutputFiles: "outputs", Folder: "folders"}


def _guard(declared: Stage, values: Mapping[str, Any], overwrite: bool) -> None:
    """The output guard over the stage's paths, those derived from the run included, before any work."""
    paths: dict[str, list[Any]] = {"inputs": [], "outputs": [], "folders": []}
    for argument in declared.arguments:
        role, value = GUARD_ROLES.get(type(argument.marker)), values[argument.name]
        if role is not None:
            paths[role].append(list(value.values()) if isinstance(value, Mapping) else value)
    check_paths(paths["inputs"], paths["outputs"], paths["folders"], overwrite=overwrite)


def configfile_argument(parser: argparse.ArgumentParser) -> None:
    """--configfile: the run's config, read as the workflow reads it (asrmerge.workflow.experiment)."""
    from asrmerge.workflow.experiment import DEFAULT_CONFIG

    parser.add_argument("--configfile", default=DEFAULT_CONFIG,
                        help=f"the run's config (default {DEFAULT_CONFIG}); its `results` folder is read and written")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """One `asrmerge` subcommand per declared stage."""
    for declared in stages().values():
        rules = ("rules " if len(declared.rules) > 1 else "rule ") + ", ".join(declared.rules)
        parser = subparsers.add_parser(declared.command, help=f"{declared.help} ({rules})",
                                       description=declared.description)
        for argument in declared.arguments:
            if _takes_flag(argument):
                _add_flag(parser, argument)
        if any(argument.marker.of is not None for argument in declared.arguments):
            configfile_argument(parser)
        if any(isinstance(argument.marker, Folder) for argument in declared.arguments):
            overwrite_argument(parser)
        parser.set_defaults(func=functools.partial(_run_command, declared))


def _run_command(declared: Stage, args: argparse.Namespace) -> int:
    values = _command_values(declared, args)
    _guard(declared, values, getattr(args, "overwrite", False))
    declared.call(values)
    return 0
