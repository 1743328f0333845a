"""The workflow's stages as plain functions of paths and options: a set of the corpus, the base model, the leakage
check, fine-tuning, task vectors, statistics, merges, λ selection, decoding, scoring, diagnostics, exports, tables
and figures.

Each stage is declared once, by its signature (asrmerge.workflow.stage): the markers of its arguments say which are
inputs, outputs, pairs, options and values, and which the run's config gives, and from that one declaration come
both the rules' job (`scripts/stage.py`, the script of every rule) and the `asrmerge` subcommand. So a stage run by
hand (a debugger, a notebook, a cluster node without Snakemake) does what the workflow's job does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from asrmerge import layout
from asrmerge.atomic import write_json
from asrmerge.defaults import choices, default
from asrmerge.merging.cli import finite_float
from asrmerge.merging.spec import PER_TASK_STATISTICS
from asrmerge.workflow.stage import (
    Folder,
    FromRule,
    FromRun,
    Input,
    Output,
    Pairs,
    Settings,
    Value,
    parse_value,
    setting,
    stage,
    stages,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: The device argument of every stage that runs a model (config `device`).
Device = Annotated[str, Value("where the model runs", choices=choices("device"))]
Seed = Annotated[int, Value("seed of every draw")]
TrainManifests = Annotated[Sequence[PathLike], Input("manifests whose train split is used", many=True)]
DECODING_OPTIONS = "decoding option KEY=VALUE of config `evaluation` (batch_size, max_new_tokens, num_beams, long_form)"


def float_list(text: str) -> list[float]:
    """"0.25,0.5,1" -> [0.25, 0.5, 1.0] (a command's list of λ)."""
    return [float(x) for x in text.split(",")]


def _set_spec(run: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    from asrmerge.workflow.config import rows_spec

    sets = run.config["corpus"]["sets"]
    if values["set"] not in sets:
        raise ValueError(f"set {values['set']!r} is not in config corpus.sets (sets: {', '.join(sorted(sets))})")
    return rows_spec(sets[values["set"]])


def _recordings_source(run: Any, values: Mapping[str, Any]) -> str | None:
    joined = values["spec"].get("recordings_of")
    return run.manifest(joined) if joined else None


@stage("corpus", rules=("corpus_set",), help="build one set of a run's corpus: synthesised, joined into long "
       "recordings, or imported from a manifest or a dataset")
def corpus(
    set: Annotated[str, Value("the set to build (a key of config `corpus.sets`)")],
    spec: Annotated[Mapping[str, Any], FromRun("the set's entry", of=_set_spec)],
    out: Annotated[PathLike, Folder("the set's folder: manifest.jsonl and audio/",
                                    of=lambda run, values: str(Path(run.manifest(values["set"])).parent),
                                    rule_may_omit=True)],
    sets: Annotated[Mapping[str, Any], FromRun("every set of the run", of=setting("corpus.sets"),
                                               rule_may_omit=True)],
    sample_rate: Annotated[int, FromRun("audio sample rate", of=setting("corpus.sample_rate"))],
    seed: Annotated[int, FromRun("seed of every draw", of=setting("seed"))],
    audio_seconds: Annotated[float, FromRun("the model's window", of=setting("base_model.audio_seconds"),
                                            rule_may_omit=True)],
    long_form: Annotated[str, FromRun("how recordings longer than the window are decoded",
                                      of=setting("evaluation.long_form"), rule_may_omit=True)],
    recordings_source: Annotated[PathLike | None, Input("a long-form set's source: the manifest of the set whose "
                                                        "test utterances it joins", of=_recordings_source,
                                                        rule_may_omit=True)] = None,
) -> Path:
    """Synthesise the set `set` from its generator spec, join another set's test utterances into long recordings,
    or import a user manifest or a Hugging Face dataset into `out`; then say in the log what happens to recordings
    longer than the model's window (asrmerge.evaluation.longform.length_report). The window and the long-form mode
    are read from the config, not rule params: changing how the run decodes must not rebuild its corpus."""
    from asrmerge.data.corpus import build_set
    from asrmerge.data.manifest import read_manifest
    from asrmerge.data.recordings import build_recordings, is_recordings_spec, parse_recordings_spec
    from asrmerge.data.user_manifest import import_user_set, user_set_sources
    from asrmerge.evaluation.longform import length_report
    from asrmerge.layout import MANIFEST_NAME

    manifest = Path(out) / MANIFEST_NAME
    if user_set_sources(spec):
        import_user_set(set, spec, manifest, sample_rate)
    elif is_recordings_spec(spec):
        if not Path(recordings_source).is_file():
            raise FileNotFoundError(f"set {set!r} joins the test utterances of set {spec['recordings_of']!r}, whose "
                                    f"manifest {recordings_source} does not exist: build it first")
        build_recordings(set, parse_recordings_spec(set, spec, sets), recordings_source, out, seed=seed,
                         sample_rate=sample_rate)
    else:
        build_set(set, spec, out, seed=seed, sample_rate=sample_rate)
    for line in length_report(read_manifest(manifest), audio_seconds, long_form):
        log.info(line)
    return manifest


def _general_manifests(run: Any, values: Mapping[str, Any]) -> list[str]:
    return run.manifests(run.general_sets) if values["settings"]["source"] == "pretrain" else []


@stage("pretrain", rules=("base_model",), threads=True,
       help="a run's base model as config `base_model` says: pretrained, continued or a released Whisper")
def base_model(
    settings: Annotated[Mapping[str, Any], FromRun("config `base_model`", of=setting("base_model"))],
    general: Annotated[Sequence[PathLike], Input("the general sets' manifests (train split) to pretrain on",
                                                 many=True, of=_general_manifests)],
    out: Annotated[PathLike, Folder("model folder to write", of=lambda run, values: run.result(layout.BASE_MODEL))],
    seed: Annotated[int, FromRun("seed of every draw", of=setting("seed"))],
    generation: Annotated[Mapping[str, Any], FromRun("language, num_beams and max_new_tokens of the model's "
                                                     "generation config", of=lambda run, values: run.generation)],
    device: Annotated[str, Value("where the model runs", choices=choices("device"), of=setting("device"))],
) -> Path:
    """The foundation as config `base_model` says (`settings`): pretrained on the train splits of `general`,
    continued from `init`, or a released Whisper copied (its generation config set to `generation`:
    asrmerge.workflow.experiment.Experiment.generation); resumes from `out`'s resume state when it matches."""
    from asrmerge.training.foundation import prepare_base_model
    from asrmerge.models.whisper import resolve_device
    from asrmerge.workflow.jobs import utterances

    missing = [path for path in general if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"general set manifest {missing[0]} does not exist: build it first "
                                "(asrmerge corpus, or snakemake with that file as the target)")
    prepare_base_model(settings, utterances(general, split="train"), out, resolve_device(device), seed, generation)
    return Path(out)


@stage("check-splits", rules=("check_splits",),
       help="no recording in a tuning split of one set and a test split of another")
def check_splits(
    sets: Annotated[Mapping[str, PathLike], Pairs("a set and its manifest (repeatable; every set of the run)",
                                                  flag="--set")],
    out: Annotated[PathLike, Output("summary JSON to write")],
    cache: Annotated[PathLike | None, Value("digest cache file (default: beside --out)")] = None,
) -> Path:
    """The leakage check across the sets (asrmerge.data.content.check_splits): a recording found in both a tuning
    and a test split names the two rows. Audio digests are cached in `cache`."""
    from asrmerge.data.content import check_splits as check

    return check(sets, out, cache or str(Path(out).parent / layout.DIGEST_CACHE))


@stage("finetune", rules=("finetune_domain", "finetune_joint"), threads=True,
       help="fully fine-tune a model folder on manifests' train splits")
def finetune(
    base: Annotated[PathLike, Input("model folder to start from")],
    train: TrainManifests,
    out: Annotated[PathLike, Folder("output model folder (with loss.csv)")],
    options: Annotated[Mapping[str, Any], Settings("training option KEY=VALUE of config `finetune.domain` (steps "
                                                  "and learning_rate are required)")],
    seed: Seed = default("seed"),
    device: Device = default("device"),
    replay: Annotated[Sequence[PathLike], Input("general data mixed into each batch", many=True)] = (),
) -> Path:
    """Fully fine-tune the model folder `base` on the train splits of the `train` manifests (with replay of the
    train splits of the `replay` manifests); resumes from `out`'s resume state when it matches."""
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.training.loop import TrainingOptions, train as train_model
    from asrmerge.workflow.jobs import utterances

    target = resolve_device(device)
    train_model(
        load_whisper(base, device=target),
        utterances(train, split="train"),
        TrainingOptions(**options, seed=seed),
        out,
        target,
        replay_set=utterances(replay, split="train"),
    )
    return Path(out)


@stage("import-finetune", rules=("import_finetune",),
       help="a fine-tune you supply, checked against the base and adapted to its window")
def import_finetune(
    checkpoint: Annotated[str, Value("the fine-tune: a transformers folder or a hub id")],
    base: Annotated[PathLike, Input("the run's base model folder")],
    out: Annotated[PathLike, Folder("output model folder")],
) -> Path:
    """The fine-tune at `checkpoint` in the base's window (asrmerge.training.foundation.adopt_finetune); any other
    difference from the base is an error naming both."""
    from asrmerge.training.foundation import adopt_finetune

    log.info("using the given fine-tune %s", checkpoint)
    # an earlier output is replaced only as the output guard allowed (asrmerge.guard: --overwrite)
    adopt_finetune(checkpoint, base).save(out)
    return Path(out)


@stage("task-vector", rules=("task_vector",), help="τ = θ_finetuned − θ_base, streamed to one safetensors file")
def task_vector(
    base: Annotated[PathLike, Input("base model folder or .safetensors file")],
    finetuned: Annotated[PathLike, Input("fine-tuned model folder or .safetensors file")],
    out: Annotated[PathLike, Output("output .safetensors file (float32)")],
) -> Path:
    """The task vector of a fine-tune (asrmerge.merging.engine.compute_task_vector)."""
    from asrmerge.merging.engine import compute_task_vector

    return compute_task_vector(base, finetuned, out)


@stage("task-spectra", rules=("task_spectra",), threads=True,
       help="singular values, effective rank and norm of every matrix of a task vector")
def task_spectra(
    task_vector: Annotated[PathLike, Input("a task-vector file (task-vector)")],
    out: Annotated[PathLike, Output("spectra JSON, read by diagnose")],
) -> Path:
    """The spectrum of every matrix of one task vector, cached for the diagnostics of every merge."""
    from asrmerge.merging.diagnostics import write_task_spectra

    return write_task_spectra(task_vector, out)


@stage("diagnose", rules=("merge_diagnostics",), threads=True,
       help="spectra, effective ranks and sign conflicts of a merged τ")
def diagnose(
    merged: Annotated[PathLike, Input("the merged task vector")],
    task_vectors: Annotated[Sequence[PathLike], Input("the task vectors it merged, in order", many=True)],
    spectra: Annotated[Sequence[PathLike], Input("their spectra (task-spectra), in the same order", many=True)],
    out: Annotated[PathLike, Output("diagnostics JSON")],
) -> Path:
    """The records `merge --diagnostics` takes during a merge, less the Newton-Schulz orthogonality error, from the
    files of a finished merge (asrmerge.merging.diagnostics.diagnose_merge)."""
    from asrmerge.merging.diagnostics import diagnose_merge

    if len(spectra) != len(task_vectors):
        raise ValueError(f"--spectra gives {len(spectra)} files for {len(task_vectors)} --task-vectors")
    return diagnose_merge(merged, task_vectors, spectra, out)


#: Arguments of `merge` that a recipe fixes: given beside --recipe (other than their defaults), they are refused.
RECIPE_FIXES = ("base", "method", "task_vectors", "finetuned", "params", "statistics", "out", "lam", "seed", "device",
                "svd_dtype", "exclude_from_svd", "diagnostics")


@stage("merge", rules=("merge",), threads=True,
       help="merge task vectors with a registered method (writes the merged τ and/or model)")
def merge(
    base: Annotated[PathLike | None, Input("base model folder or .safetensors file")] = None,
    method: Annotated[str | None, Value("registered method name (see `asrmerge methods`)")] = None,
    task_vectors: Annotated[Sequence[PathLike], Input("task-vector files (task-vector)", many=True)] = (),
    finetuned: Annotated[Sequence[PathLike], Input("fine-tuned model folders (τ computed on the fly)", many=True)] = (),
    params: Annotated[Mapping[str, Any] | None, Settings("method parameter KEY=VALUE (repeatable)", flag="--param",
                                                        raw=True)] = None,
    statistics: Annotated[Sequence[PathLike], Input("data-aware methods: each task's statistics file (statistics), "
                                                    "in the order of the task vectors", many=True)] = (),
    out: Annotated[PathLike | None, Output("output .safetensors file with the merged task vector τ")] = None,
    out_model: Annotated[PathLike | None, Folder("output model folder θ_base + λ·τ (base dtypes and config files), "
                                                 "written in the same pass")] = None,
    lam: Annotated[float | None, Value("λ for --out-model (default 1.0)", parse=finite_float, flag="--lambda")] = None,
    seed: Annotated[int, Value("seed of the per-tensor generators (random methods)")] = default("seed"),
    device: Annotated[str, Value("torch device of the per-tensor computation: cpu, cuda, cuda:1 or auto")]
    = default("merge.device"),
    svd_dtype: Annotated[str, Value("working precision of SVDs", choices=choices("merge.svd_dtype"))]
    = default("merge.svd_dtype"),
    exclude_from_svd: Annotated[Sequence[str], Value("regexes of tensors kept out of subspace methods' SVD", many=True)]
    = default("merge.exclude_from_svd"),
    diagnostics: Annotated[PathLike | None, Output("also write per-tensor diagnostics JSON here")] = None,
    recipe: Annotated[PathLike | None, Input("merge_recipe.json of an exported merge: rebuild it into --out-model "
                                             "(the same weights; every input checked against its SHA-256 first)")] = None,
) -> Path:
    """Merge T task vectors (or fine-tunes) with a registered method (asrmerge.merging.engine.merge): the merged τ
    (`out`) and/or θ₀ + λ·τ as a model folder (`out_model`) in one pass; or, with `recipe`, an exported merge
    rebuilt (asrmerge.merging.recipe)."""
    given = {name: value for name, value in locals().items() if name in RECIPE_FIXES}
    if recipe is not None:
        return _rebuild(recipe, out_model, given)
    from asrmerge.merging.engine import merge as merge_tensors
    from asrmerge.merging.cli import parse_params
    from asrmerge.merging.recipe import engine_settings
    from asrmerge.merging.registry import get_method

    missing = [flag for flag, value in (("--method", method), ("--base", base),
                                        ("--finetuned or --task-vectors", finetuned or task_vectors)) if not value]
    if missing:
        raise ValueError(f"give {missing[0]} (or --recipe of an exported merge)")
    if out is None and out_model is None:
        raise ValueError("give --out (merged task vector) and/or --out-model (merged model folder)")
    if lam is not None and out_model is None:
        raise ValueError("--lambda scales the merged model: it needs --out-model")
    spec = get_method(method)
    return merge_tensors(base, task_vectors=list(task_vectors) or None, finetuned=list(finetuned) or None,
                         method=spec.name, params=parse_params(spec, params or {}), out_path=out, out_model=out_model,
                         lam=1.0 if lam is None else lam, diagnostics_path=diagnostics, statistics=list(statistics),
                         **engine_settings(seed, device, svd_dtype, exclude_from_svd))


def _rebuild(recipe: PathLike, out_model: PathLike | None, given: Mapping[str, Any]) -> Path:
    """An exported merge again from its recipe; the arguments a recipe fixes must keep their defaults."""
    from asrmerge.merging.recipe import read_recipe, rebuild

    def plain(value: Any) -> Any:  # a command gives [] and {} where the signature says () and None
        return list(value) if isinstance(value, (list, tuple)) else (value or None) if isinstance(value, dict) else value

    declared = {argument.name: argument for argument in stages()["merge"].arguments}
    changed = [name for name in RECIPE_FIXES if plain(given[name]) != plain(declared[name].default)]
    if changed:
        raise ValueError(f"--recipe fixes {declared[changed[0]].flag}: give only --recipe and --out-model")
    if out_model is None:
        raise ValueError("--recipe rebuilds a model folder: give --out-model")
    return rebuild(read_recipe(recipe), out_model)


@stage("statistics", rules=("statistics",), threads=True,
       help="a fine-tune's statistics for data-aware merges: gram (RegMean), fisher")
def statistics(
    kind: Annotated[str, Value("gram (RegMean) or fisher", choices=PER_TASK_STATISTICS)],
    model: Annotated[PathLike, Input("the domain's fine-tuned model folder")],
    train: TrainManifests,
    out: Annotated[PathLike, Output("output safetensors file, one tensor per weight covered")],
    options: Annotated[Mapping[str, Any], Settings("option KEY=VALUE of config `statistics` (utterances, "
                                                  "batch_size, fisher_outputs, max_memory_mb)")],
    seed: Seed = default("seed"),
    device: Device = default("device"),
) -> Path:
    """`kind` statistics (asrmerge.training.statistics) of the model folder `model` over a seeded draw from the
    train splits of the `train` manifests, `options` as config `statistics`."""
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.training.statistics import StatisticsOptions, write_statistics
    from asrmerge.workflow.jobs import utterances

    from asrmerge.merging.checkpoint import MODEL_FINGERPRINT, open_checkpoint

    target = resolve_device(device)
    settings = StatisticsOptions(**{**options, "layers": tuple(options.get("layers", ()))}, seed=seed)
    with open_checkpoint(model) as checkpoint:  # merges match statistics to task vectors by this, never by position
        fingerprint = checkpoint.fingerprint
    provenance = {"model": str(model), MODEL_FINGERPRINT: fingerprint, "manifests": ", ".join(str(m) for m in train)}
    return write_statistics(kind, load_whisper(model, device=target), utterances(train, split="train"),
                            settings, target, out, provenance)


@stage("adamerging-coefficients", rules=("adamerging_coefficients",), threads=True,
       help="learn AdaMerging's coefficients on validation audio")
def adamerging_coefficients(
    base: Annotated[PathLike, Input("the base model folder")],
    task_vectors: Annotated[Sequence[PathLike], Input("one task vector per domain, in order", many=True)],
    validation: Annotated[Sequence[PathLike], Input("manifests whose validation audio is used (no labels)",
                                                    many=True)],
    options: Annotated[Mapping[str, Any], Settings("method parameter KEY=VALUE of adamerging (granularity, steps, "
                                                  "learning_rate, init, batch_size)")],
    out: Annotated[PathLike, Output("coefficient safetensors file (the merge's statistics input)")],
    summary: Annotated[PathLike, Output("readable summary JSON with the entropy curve")],
    seed: Seed = default("seed"),
    device: Device = default("device"),
    max_new_tokens: Annotated[int | str, Value("the most tokens of one transcript (a number, or auto)",
                                               parse=parse_value)] = default("evaluation.max_new_tokens"),
) -> Path:
    """AdaMerging's coefficients for θ_base + Σ_t λ_t τ_t (asrmerge.training.adamerging), learned on the audio of
    the validation splits; `options` are the method's parameters."""
    import torch
    from safetensors.torch import load_file

    from asrmerge.merging.checkpoint import TASK_FINGERPRINTS
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.training.adamerging import AdaMergingOptions, learn_coefficients, write_coefficients
    from asrmerge.workflow.jobs import utterances

    target = resolve_device(device)
    whisper = load_whisper(base, device=target)
    loaded = [load_file(str(p)) for p in task_vectors]
    stacked = {name: torch.stack([tv[name] for tv in loaded]) for name in loaded[0]}
    settings = AdaMergingOptions(**options, max_new_tokens=max_new_tokens, seed=seed)
    coefficients, curve = learn_coefficients(whisper, stacked, utterances(validation, split="validation"),
                                             settings, target)
    provenance = {"base": str(base), "task_vectors": ", ".join(str(p) for p in task_vectors),
                  TASK_FINGERPRINTS: json.dumps(task_origins(task_vectors))}
    return write_coefficients(coefficients, curve, settings, out, summary, provenance)


def check_made_from(base: PathLike, task_vector: PathLike) -> None:
    """A task vector is applied only to the base it was made from (names, shapes and recorded content fingerprint:
    asrmerge.merging.checkpoint.check_compatible), before any audio is decoded."""
    from asrmerge.merging.checkpoint import check_compatible, open_checkpoint

    with open_checkpoint(base) as base_checkpoint, open_checkpoint(task_vector) as tau:
        check_compatible(base_checkpoint, tau, names=base_checkpoint.float_names)


def task_origins(task_vectors: Sequence[PathLike]) -> list[str | None]:
    """The fine-tune each task vector was made from (its recorded fingerprint), in order."""
    from asrmerge.merging.checkpoint import FINETUNED_FINGERPRINT, open_checkpoint

    origins = []
    for path in task_vectors:
        with open_checkpoint(path) as tau:
            origins.append(tau.metadata.get(FINETUNED_FINGERPRINT))
    return origins


@stage("select-lambda", rules=("select_lambda",), threads=True,
       help="choose λ for θ_base + λ·τ on validation splits")
def select_lambda(
    base: Annotated[PathLike, Input("the base model folder")],
    task_vector: Annotated[PathLike, Input("the merged task vector")],
    validation: Annotated[Sequence[PathLike], Input("manifests whose validation split is used", many=True)],
    lambdas: Annotated[Sequence[float], Value("comma-separated grid, e.g. 0.25,0.5,1,1.5", parse=float_list)],
    out: Annotated[PathLike, Output("selection record (JSON: the curve, the chosen λ and the rule)")],
    evaluation: Annotated[Mapping[str, Any], Settings(DECODING_OPTIONS)],
    metric: Annotated[str, Value("error rate minimised", choices=choices("selection.metric"))]
    = default("selection.metric"),
    tie_break: Annotated[str, Value("which λ wins a tie", choices=choices("selection.tie_break"))]
    = default("selection.tie_break"),
    device: Device = default("device"),
    record: Annotated[Mapping[str, Any] | None, FromRule("the merge's method and parameters")] = None,
) -> Path:
    """Sweep λ for θ₀ + λ·τ on the validation splits and write the selection record (asrmerge.layout.SELECTION),
    `record` (the method and parameters of the rule's wildcards) included."""
    from asrmerge.evaluation.decoding import DecodingOptions
    from asrmerge.models.whisper import resolve_device
    from asrmerge.evaluation.selection import select_lambda as sweep

    check_made_from(base, task_vector)
    result = sweep(base, task_vector, validation, lambdas, DecodingOptions(**evaluation),
                   resolve_device(device), metric=metric, tie_break=tie_break)
    return write_json(out, {**dict(record or {}), **result}, indent=2)


@stage("decode", rules=("decode_model", "decode_merged"), threads=True,
       help="transcribe test splits with a model folder, or a base + merged τ at its chosen λ")
def decode(
    model: Annotated[PathLike, Input("model folder (the base of a merge, with --task-vector and --selection)")],
    test_sets: Annotated[Mapping[str, PathLike], Pairs("a test set and its manifest (repeatable)", flag="--test-set")],
    out_dir: Annotated[PathLike, Output("folder of the hypothesis files, one per test set")],
    evaluation: Annotated[Mapping[str, Any], Settings(DECODING_OPTIONS)],
    device: Device = default("device"),
    task_vector: Annotated[PathLike | None, Input("a merged task vector, decoded as θ + λ·τ")] = None,
    selection: Annotated[PathLike | None, Input("the selection record whose chosen λ scales --task-vector")] = None,
) -> None:
    """Transcribe the test split of each test set with the model folder `model`, or with `model` + λ·`task_vector`
    at the λ of the selection record `selection`; hypotheses go to `out_dir` (asrmerge.layout.HYPOTHESIS_FILE)."""
    from asrmerge.data.manifest import read_manifest
    from asrmerge.evaluation.decoding import DecodingOptions, transcribe
    from asrmerge.evaluation.hypotheses import write_jsonl
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.evaluation.selection import ScaledTaskVector

    if (task_vector is None) != (selection is None):
        raise ValueError("a merged task vector is decoded at the λ of its selection record: give both or neither")
    target = resolve_device(device)
    whisper = load_whisper(model, device=target)
    if task_vector is not None:
        check_made_from(model, task_vector)
        lam = layout.read_chosen_lambda(selection)
        log.info("merged model at lambda %g", lam)
        whisper = ScaledTaskVector(whisper, task_vector).set_lambda(lam)
    options = DecodingOptions(**evaluation)
    # All sets in one call: batches are filled across sets (each row is decoded independently of its batch).
    sets = {test_set: read_manifest(manifest, split="test") for test_set, manifest in test_sets.items()}
    rows = iter(transcribe(whisper, [u for utterances in sets.values() for u in utterances], options, target))
    for test_set, utterances in sets.items():
        set_rows = [next(rows) for _ in utterances]
        write_jsonl(set_rows, Path(out_dir) / layout.HYPOTHESIS_FILE.format(test_set=test_set))
        log.info("%s: %d utterances", test_set, len(set_rows))
        log_flagged(test_set, set_rows)


def log_flagged(test_set: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """A warning naming the set's flagged hypotheses (asrmerge.evaluation.hypotheses.FLAGS), if any."""
    from asrmerge.evaluation.hypotheses import flag_counts

    counts = {flag: n for flag, n in flag_counts(rows).items() if n}
    if counts:
        first = next(row["id"] for row in rows if row.get("flags"))
        log.warning("%s: %s of %d hypotheses flagged (e.g. %s): not complete transcripts", test_set,
                    ", ".join(f"{n} {flag.replace('_', ' ')}" for flag, n in counts.items()), len(rows), first)


@stage("score", rules=("score",), help="error counts per test set and utterance from hypothesis files")
def score(
    hypotheses: Annotated[Mapping[str, PathLike], Pairs("a test set and its hypothesis file (repeatable)")],
    out: Annotated[PathLike, Output("score JSON")],
) -> Path:
    """Error counts per test set (name -> hypothesis file) and per utterance (asrmerge.layout.SCORES)."""
    from asrmerge.evaluation.hypotheses import flag_counts, read_jsonl
    from asrmerge.evaluation.scoring import counts_to_dict, score_hypotheses

    scores = {}
    for test_set, path in hypotheses.items():
        rows = read_jsonl(path)
        total, per_utterance = score_hypotheses(rows)
        scores[test_set] = {
            "total": counts_to_dict(total),
            "utterances": {row["id"]: counts_to_dict(c) for row, c in zip(rows, per_utterance)},
            "flagged": flag_counts(rows),
            "flagged_utterances": {row["id"]: row["flags"] for row in rows if row.get("flags")},
        }
        log_flagged(test_set, rows)
    return write_json(out, scores)
