"""Sub-commands of the stages the workflow's rule scripts run (asrmerge.workflow.stages and the functions they call):
check-splits, pretrain, finetune, import-finetune, statistics, adamerging-coefficients, select-lambda, decode, score,
with inputs and outputs named on the command line; and compare-runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from asrmerge.defaults import default
from asrmerge.guard import declare_paths
from asrmerge.merging.spec import PER_TASK_STATISTICS
from asrmerge.workflow import stages
from asrmerge.workflow.experiment import DEFAULT_CONFIG, Experiment


def _pairs(values: list[str], what: str) -> dict[str, str]:
    """["news=data/news/manifest.jsonl", ...] -> {"news": "data/news/manifest.jsonl", ...}."""
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{what} {value!r} is not NAME=PATH")
        if name in pairs:
            raise ValueError(f"{what} {name!r} is given twice")
        pairs[name] = path
    return pairs


def _value(text: str) -> Any:
    """A number when it reads as one ("1e-5" too, which YAML 1.1 leaves a string), else the YAML value."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _options(values: list[str]) -> dict[str, Any]:
    """["steps=100", "learning_rate=1e-5", "long_form=vad"] -> {"steps": 100, "learning_rate": 1e-05, ...}."""
    return {key: _value(value) for key, value in _pairs(values, "option").items()}


def _pretrain(args: argparse.Namespace) -> int:
    from asrmerge import layout

    experiment = Experiment.load(args.configfile)
    settings = experiment.config["base_model"]
    general = experiment.manifests(experiment.general_sets) if settings["source"] == "pretrain" else []
    missing = [path for path in general if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"general set manifest {missing[0]} does not exist: make it first "
                                f"(snakemake {missing[0]} --configfile {args.configfile})")
    out = args.out or experiment.result(layout.BASE_MODEL)
    stages.base_model(settings, general, out, experiment.config["seed"], args.device or experiment.config["device"],
                      experiment.generation)
    print(out)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    stages.finetune(args.base, args.train, args.out, _options(args.option), args.seed, args.device, args.replay)
    return 0


def _import_finetune(args: argparse.Namespace) -> int:
    from asrmerge.training.foundation import adopt_finetune

    # the output guard has checked the folder (asrmerge.guard): an earlier output of this project, with --overwrite
    adopt_finetune(args.checkpoint, args.base).save(args.out, replace=args.overwrite)
    return 0


def _check_splits(args: argparse.Namespace) -> int:
    from asrmerge import layout
    from asrmerge.data.content import check_splits

    cache = args.cache or str(Path(args.out).parent / layout.DIGEST_CACHE)
    check_splits(_pairs(args.set, "--set"), args.out, cache)
    return 0


def _adamerging_coefficients(args: argparse.Namespace) -> int:
    stages.adamerging_coefficients(args.base, args.task_vectors, args.validation, _options(args.option), args.out,
                                   args.summary, args.seed, args.device, _value(args.max_new_tokens))
    return 0


def _statistics(args: argparse.Namespace) -> int:
    stages.statistics(args.kind, args.model, args.train, args.out, _options(args.option), args.seed, args.device)
    return 0


def _select_lambda(args: argparse.Namespace) -> int:
    lambdas = [float(x) for x in args.lambdas.split(",")]
    stages.select_lambda(args.base, args.task_vector, args.validation, lambdas, args.out, _options(args.option),
                         args.metric, args.tie_break, args.device)
    return 0


def _decode(args: argparse.Namespace) -> int:
    manifests = _pairs(args.test_set, "--test-set")
    plan = {name: {"manifest": path, "hypotheses": str(Path(args.out_dir) / f"{name}.jsonl")}
            for name, path in manifests.items()}
    stages.decode(args.model, plan, _options(args.option), args.device, args.task_vector, args.selection)
    return 0


def _compare_runs(args: argparse.Namespace) -> int:
    from asrmerge.workflow.compare import compare_runs

    comparison = compare_runs(args.first, args.second)
    print("\n".join(comparison.report()))
    return 0 if comparison.equal else 1


def _score(args: argparse.Namespace) -> int:
    stages.score(_pairs(args.hypotheses, "--hypotheses"), args.out)
    return 0


DECODING_OPTIONS = "decoding option KEY=VALUE of config `evaluation` (batch_size, max_new_tokens, num_beams, long_form)"


def _model_run_arguments(parser: argparse.ArgumentParser, option_help: str) -> None:
    """--option KEY=VALUE (repeatable) and --device, shared by the stages that run a model."""
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=option_help)
    parser.add_argument("--device", default=default("device"), choices=["auto", "cpu", "cuda"], help="where the model runs")


def configfile_argument(parser: argparse.ArgumentParser) -> None:
    """--configfile: the run's config, read as the workflow reads it (asrmerge.workflow.experiment)."""
    parser.add_argument("--configfile", default=DEFAULT_CONFIG,
                        help=f"the run's config (default {DEFAULT_CONFIG}); its `results` folder is read and written")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the pretrain, finetune, statistics, select-lambda, decode and score subcommands."""

    p = subparsers.add_parser(
        "pretrain", help="make a run's base model as config `base_model` says (rule base_model)",
        description="Inputs: the config's `base_model` settings and, to pretrain, its general sets' manifests (train "
                    "split) under the results folder. Output: models/base under the results folder, or --out. "
                    "Resumes from the output's resume state when it matches.",
    )
    configfile_argument(p)
    p.add_argument("--out", default=None, help="model folder to write (default: the run's models/base)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default: config `device`")
    declare_paths(p, folders=["out"])
    p.set_defaults(func=_pretrain)

    p = subparsers.add_parser(
        "finetune", help="fully fine-tune a model folder on manifests' train splits (rules finetune_domain/joint)",
        description="Inputs: --base model folder, --train manifests (their train split), optional --replay manifests. "
                    "Output: --out model folder (with loss.csv). Resumes from --out's resume state when it matches.",
    )
    p.add_argument("--base", required=True, help="model folder to start from")
    p.add_argument("--train", nargs="+", required=True, metavar="MANIFEST", help="manifests whose train split is used")
    p.add_argument("--replay", nargs="*", default=[], metavar="MANIFEST", help="general data mixed into each batch")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--seed", type=int, default=default("seed"))
    _model_run_arguments(p, "training option of config `finetune.domain` (steps and learning_rate are required)")
    declare_paths(p, inputs=["base", "train", "replay"], folders=["out"])
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser(
        "import-finetune", help="a fine-tune you supply, checked against the base and adapted to its window "
                                "(rule import_finetune)",
        description="Inputs: --checkpoint model folder or hub id, --base model folder. Output: --out model folder "
                    "(the base's window; any other difference from the base is an error naming both).",
    )
    p.add_argument("--checkpoint", required=True, help="the fine-tune: a transformers folder or a hub id")
    p.add_argument("--base", required=True, help="the run's base model folder")
    p.add_argument("--out", required=True, help="output model folder")
    declare_paths(p, inputs=["base"], folders=["out"])
    p.set_defaults(func=_import_finetune)

    p = subparsers.add_parser(
        "check-splits", help="no recording in a tuning split of one set and a test split of another (rule check_splits)",
        description="Inputs: --set NAME=MANIFEST (repeatable; every set of the run). Output: --out summary JSON; a "
                    "recording found in both names the two rows. Audio digests are cached in --cache.",
    )
    p.add_argument("--set", action="append", required=True, metavar="NAME=MANIFEST")
    p.add_argument("--out", required=True, help="summary JSON to write")
    p.add_argument("--cache", default=None, help="digest cache file (default: beside --out)")
    declare_paths(p, pairs=["set"], outputs=["out"])
    p.set_defaults(func=_check_splits)

    p = subparsers.add_parser(
        "adamerging-coefficients", help="learn AdaMerging's coefficients on validation audio (rule "
                                        "adamerging_coefficients)",
        description="Inputs: --base model folder, --task-vectors (one per domain, in order), --validation manifests "
                    "(their validation split's audio; no labels). Outputs: --out coefficient file (the merge's "
                    "statistics input), --summary JSON with the entropy curve.",
    )
    p.add_argument("--base", required=True)
    p.add_argument("--task-vectors", nargs="+", required=True, metavar="TASK_VECTOR")
    p.add_argument("--validation", nargs="+", required=True, metavar="MANIFEST")
    p.add_argument("--out", required=True, help="coefficient safetensors file")
    p.add_argument("--summary", required=True, help="readable summary JSON")
    p.add_argument("--seed", type=int, default=default("seed"))
    p.add_argument("--max-new-tokens", default=default("evaluation.max_new_tokens"),
                   help="the most tokens of one transcript (an int, or auto)")
    _model_run_arguments(p, "method parameter KEY=VALUE of adamerging (granularity, steps, learning_rate, init, "
                            "batch_size)")
    declare_paths(p, inputs=["base", "task_vectors", "validation"], outputs=["out", "summary"])
    p.set_defaults(func=_adamerging_coefficients)

    p = subparsers.add_parser(
        "statistics", help="a fine-tune's statistics for data-aware merges: gram (RegMean), fisher (rule statistics)",
        description="Inputs: --model fine-tuned model folder, --train manifests (a seeded draw from their train "
                    "split). Output: --out safetensors file of the statistics, one tensor per weight covered.",
    )
    p.add_argument("--kind", required=True, choices=list(PER_TASK_STATISTICS))
    p.add_argument("--model", required=True, help="the domain's fine-tuned model folder")
    p.add_argument("--train", nargs="+", required=True, metavar="MANIFEST", help="manifests whose train split is used")
    p.add_argument("--out", required=True, help="output safetensors file")
    p.add_argument("--seed", type=int, default=default("seed"))
    _model_run_arguments(p, "option of config `statistics` (utterances, batch_size, fisher_outputs, max_memory_mb)")
    declare_paths(p, inputs=["model", "train"], outputs=["out"])
    p.set_defaults(func=_statistics)

    p = subparsers.add_parser(
        "select-lambda", help="choose λ for θ_base + λ·τ on validation splits (rule select_lambda)",
        description="Inputs: --base model folder, --task-vector merged τ, --validation manifests (validation split "
                    "only). Output: --out selection record (JSON: the curve, the chosen λ and the rule).",
    )
    p.add_argument("--base", required=True)
    p.add_argument("--task-vector", required=True)
    p.add_argument("--validation", nargs="+", required=True, metavar="MANIFEST")
    p.add_argument("--lambdas", required=True, help="comma-separated grid, e.g. 0.25,0.5,1,1.5")
    p.add_argument("--out", required=True)
    p.add_argument("--metric", choices=["wer", "cer"], default=default("selection.metric"))
    p.add_argument("--tie-break", choices=["smallest", "largest"], default=default("selection.tie_break"))
    _model_run_arguments(p, DECODING_OPTIONS)
    declare_paths(p, inputs=["base", "task_vector", "validation"], outputs=["out"])
    p.set_defaults(func=_select_lambda)

    p = subparsers.add_parser(
        "decode", help="transcribe test splits with a model folder, or a base + merged τ (rules decode_model/merged)",
        description="Inputs: --model folder (with --task-vector and --selection: the base of a merge at its chosen "
                    "λ), --test-set NAME=MANIFEST (repeatable). Output: --out-dir/NAME.jsonl hypotheses per set.",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--task-vector", default=None)
    p.add_argument("--selection", default=None, help="selection record whose chosen λ scales --task-vector")
    p.add_argument("--test-set", action="append", required=True, metavar="NAME=MANIFEST")
    p.add_argument("--out-dir", required=True)
    _model_run_arguments(p, DECODING_OPTIONS)
    declare_paths(p, inputs=["model", "task_vector", "selection"], pairs=["test_set"], outputs=["out_dir"])
    p.set_defaults(func=_decode)

    p = subparsers.add_parser(
        "score", help="error counts per test set and utterance from hypothesis files (rule score)",
        description="Inputs: --hypotheses NAME=FILE (repeatable). Output: --out score JSON.",
    )
    p.add_argument("--hypotheses", action="append", required=True, metavar="NAME=FILE")
    p.add_argument("--out", required=True)
    declare_paths(p, pairs=["hypotheses"], outputs=["out"])
    p.set_defaults(func=_score)

    p = subparsers.add_parser(
        "compare-runs", help="compare two results folders file by file (exit status 1 when they differ)",
        description="Every file but logs/ and benchmarks/; safetensors tensor by tensor and by metadata, the rest byte "
                    "for byte, each folder's own path read as <results>. E.g. the micro config run before and after "
                    "a code change, or a SLURM run against a local one.",
    )
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.set_defaults(func=_compare_runs)
