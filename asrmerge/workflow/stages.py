"""The workflow's model stages as plain functions of paths and options: the base model, fine-tuning, λ selection,
decoding, scoring.

The rule scripts (scripts/*.py) and the `asrmerge` sub-commands (asrmerge/workflow/commands.py) both call these, so a stage
run by hand (a debugger, a notebook, a cluster node without Snakemake) does what the workflow's job does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asrmerge.atomic import write_json
from asrmerge.defaults import default

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def base_model(
    settings: Mapping[str, Any], general_manifests: Sequence[PathLike], out: PathLike, seed: int, device: str = default("device"),
    generation: Mapping[str, Any] | None = None,
) -> Path:
    """The foundation as config `base_model` says (`settings`): pretrained on the train splits of
    `general_manifests`, continued from `init`, or a released Whisper copied (its generation config set to
    `generation`: language and num_beams, asrmerge.workflow.experiment.Experiment.generation); the folder goes to `out`."""
    from asrmerge.training.foundation import prepare_base_model
    from asrmerge.models.whisper import resolve_device
    from asrmerge.workflow.jobs import utterances

    prepare_base_model(settings, utterances(general_manifests, split="train"), out, resolve_device(device), seed,
                       generation)
    return Path(out)


def finetune(
    base: PathLike, train_manifests: Sequence[PathLike], out: PathLike, options: Mapping[str, Any], seed: int,
    device: str = default("device"), replay_manifests: Sequence[PathLike] = (),
) -> Path:
    """Fully fine-tune the model folder `base` on the train splits of `train_manifests` (with replay of the train
    splits of `replay_manifests`), `options` as config `finetune.domain`; the model folder goes to `out`."""
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.training.loop import TrainingOptions, train
    from asrmerge.workflow.jobs import utterances

    target = resolve_device(device)
    train(
        load_whisper(base, device=target),
        utterances(train_manifests, split="train"),
        TrainingOptions(**options, seed=seed),
        out,
        target,
        replay_set=utterances(replay_manifests, split="train"),
    )
    return Path(out)


def statistics(
    kind: str, model: PathLike, train_manifests: Sequence[PathLike], out: PathLike, options: Mapping[str, Any],
    seed: int, device: str = default("device"),
) -> Path:
    """`kind` statistics (asrmerge.training.statistics: gram, fisher) of the model folder `model` over a seeded draw
    from the train splits of `train_manifests`, `options` as config `statistics`; written to `out`."""
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.training.statistics import StatisticsOptions, write_statistics
    from asrmerge.workflow.jobs import utterances

    from asrmerge.merging.checkpoint import MODEL_FINGERPRINT, open_checkpoint

    target = resolve_device(device)
    settings = StatisticsOptions(**{**options, "layers": tuple(options.get("layers", ()))}, seed=seed)
    with open_checkpoint(model) as checkpoint:  # merges match statistics to task vectors by this, never by position
        fingerprint = checkpoint.fingerprint
    provenance = {"model": str(model), MODEL_FINGERPRINT: fingerprint,
                  "manifests": ", ".join(str(m) for m in train_manifests)}
    return write_statistics(kind, load_whisper(model, device=target), utterances(train_manifests, split="train"),
                            settings, target, out, provenance)


def adamerging_coefficients(
    base: PathLike, task_vectors: Sequence[PathLike], validation_manifests: Sequence[PathLike], options: Mapping[str, Any],
    out: PathLike, summary: PathLike, seed: int, device: str = default("device"), max_new_tokens: int | str = default("evaluation.max_new_tokens"),
) -> Path:
    """AdaMerging's coefficients for θ_base + Σ_t λ_t τ_t (asrmerge.training.adamerging), learned on the audio of the
    validation splits of `validation_manifests`; `options` are the method's parameters (granularity, steps, ...).
    Writes the coefficient file the merge reads (`out`) and a JSON summary with the entropy curve (`summary`)."""
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
    coefficients, curve = learn_coefficients(whisper, stacked, utterances(validation_manifests, split="validation"),
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


def select_lambda(
    base: PathLike, task_vector: PathLike, validation_manifests: Sequence[PathLike], lambdas: Sequence[float],
    out: PathLike, evaluation: Mapping[str, Any], metric: str = default("selection.metric"), tie_break: str = default("selection.tie_break"),
    device: str = default("device"), record: Mapping[str, Any] | None = None,
) -> Path:
    """Sweep λ for θ₀ + λ·τ on the validation splits and write the selection record (asrmerge.layout.SELECTION),
    `record` (e.g. the method and parameters) included."""
    from asrmerge.evaluation.decoding import DecodingOptions
    from asrmerge.models.whisper import resolve_device
    from asrmerge.evaluation.selection import select_lambda as sweep

    check_made_from(base, task_vector)
    result = sweep(base, task_vector, validation_manifests, lambdas, DecodingOptions(**evaluation),
                   resolve_device(device), metric=metric, tie_break=tie_break)
    return write_json(out, {**dict(record or {}), **result}, indent=2)


def decode(
    model: PathLike, plan: Mapping[str, Mapping[str, PathLike]], evaluation: Mapping[str, Any], device: str = default("device"),
    task_vector: PathLike | None = None, selection: PathLike | None = None,
) -> None:
    """Transcribe the test split of each test set of `plan` (name -> {"manifest", "hypotheses"}) with the model
    folder `model`, or with `model` + λ·`task_vector` at the λ of the selection record `selection`."""
    from asrmerge.data.manifest import read_manifest
    from asrmerge.evaluation.decoding import DecodingOptions, transcribe
    from asrmerge.evaluation.hypotheses import write_jsonl
    from asrmerge.layout import read_chosen_lambda
    from asrmerge.models.whisper import load_whisper, resolve_device
    from asrmerge.evaluation.selection import ScaledTaskVector

    if (task_vector is None) != (selection is None):
        raise ValueError("a merged task vector is decoded at the λ of its selection record: give both or neither")
    target = resolve_device(device)
    whisper = load_whisper(model, device=target)
    if task_vector is not None:
        check_made_from(model, task_vector)
        lam = read_chosen_lambda(selection)
        log.info("merged model at lambda %g", lam)
        whisper = ScaledTaskVector(whisper, task_vector).set_lambda(lam)
    options = DecodingOptions(**evaluation)
    # All sets in one call: batches are filled across sets (each row is decoded independently of its batch).
    sets = {test_set: read_manifest(files["manifest"], split="test") for test_set, files in plan.items()}
    rows = iter(transcribe(whisper, [u for utterances in sets.values() for u in utterances], options, target))
    for test_set, utterances in sets.items():
        set_rows = [next(rows) for _ in utterances]
        write_jsonl(set_rows, plan[test_set]["hypotheses"])
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


def score(hypotheses: Mapping[str, PathLike], out: PathLike) -> Path:
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
