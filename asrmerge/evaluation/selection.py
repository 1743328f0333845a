"""Choice of the merge scaling lambda on validation data.

The merged task vector does not depend on lambda, so the sweep loads theta_0 and tau once and writes
theta_0 + lambda * tau into the same in-memory model for every lambda: k lambdas cost one merge and k decodes.
Only the utterances passed in are read; the workflow passes the domains' validation splits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from asrmerge.data.manifest import Utterance, read_manifest
from asrmerge.defaults import default
from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.layout import CHOSEN_LAMBDA
from asrmerge.merging.linalg import theta_plus
from asrmerge.models.whisper import LoadedWhisper, load_whisper
from asrmerge.progress import Progress
from asrmerge.evaluation.scoring import ErrorCounts, score_hypotheses

log = logging.getLogger(__name__)


class ScaledTaskVector:
    """A model whose weights can be set to theta_0 + lambda * tau for any lambda, without reloading (the same sum as
    an exported merged model: asrmerge.merging.linalg.theta_plus)."""

    def __init__(self, whisper: LoadedWhisper, task_vector_path: str | Path):
        self.whisper = whisper
        state = whisper.model.state_dict()
        tau = load_file(str(task_vector_path), device=str(whisper.model.device))
        missing = sorted(set(tau) - set(state))
        if missing:
            raise ValueError(f"{task_vector_path}: tensor {missing[0]} is not a parameter of the base model")
        self.targets = {name: state[name] for name in tau}
        self.base = {name: tensor.detach().clone() for name, tensor in self.targets.items()}
        self.tau = tau

    @torch.no_grad()
    def set_lambda(self, lam: float) -> LoadedWhisper:
        for name, target in self.targets.items():
            target.copy_(theta_plus(self.base[name].float(), self.tau[name].float(), lam).to(target.dtype))
        return self.whisper


def pooled_counts(rows: Sequence[dict]) -> ErrorCounts:
    total, _ = score_hypotheses(rows)
    return total


def sweep_lambda(
    scaled: ScaledTaskVector, validation: Sequence[Utterance], lambdas: Sequence[float], options: DecodingOptions,
    device: torch.device,
) -> list[dict]:
    """Validation error at each lambda, pooled over all utterances and per set."""
    curve = []
    progress = Progress(len(lambdas))
    for lam in lambdas:
        rows = transcribe(scaled.set_lambda(lam), validation, options, device, progress=False)
        by_set: dict[str, list[dict]] = {}
        for utterance, row in zip(validation, rows):
            by_set.setdefault(utterance.set, []).append(row)
        total = pooled_counts(rows)
        curve.append({
            "lambda": lam, "wer": total.wer, "cer": total.cer,
            "per_set": {name: {"wer": c.wer, "cer": c.cer} for name, c in
                        ((name, pooled_counts(r)) for name, r in by_set.items())},
        })
        log.info("lambda %.3g: validation WER %.4f CER %.4f (%s)", lam, total.wer, total.cer, progress(len(curve)))
    return curve


def choose_lambda(curve: Sequence[Mapping], metric: str = default("selection.metric"), tie_break: str = default("selection.tie_break")) -> float:
    """The lambda with the lowest validation error; ties go to the smallest (or largest) lambda."""
    sign = 1 if tie_break == "smallest" else -1
    best = min(curve, key=lambda point: (point[metric], sign * point["lambda"]))
    return float(best["lambda"])


def validation_error(record: Mapping, metric: str = default("selection.metric")) -> float:
    """The pooled validation error of a selection record at its chosen lambda."""
    chosen = record[CHOSEN_LAMBDA]
    return float(next(point[metric] for point in record["curve"] if point["lambda"] == chosen))


def best_branch(records: Mapping[str, Mapping], metric: str = default("selection.metric")) -> str:
    """The merge branch whose chosen lambda gives the lowest validation error (ties: the first in `records`' order).
    Test splits never enter: the same rule as the choice of lambda."""
    if not records:
        raise ValueError("no merge branch to choose from")
    return min(records, key=lambda branch: validation_error(records[branch], metric))


def select_lambda(
    base_dir: str | Path, task_vector_path: str | Path, manifests: Sequence[str | Path], lambdas: Sequence[float],
    options: DecodingOptions, device: torch.device, metric: str = default("selection.metric"), tie_break: str = default("selection.tie_break"),
) -> dict:
    """Sweep lambda on the validation split of `manifests` and return the curve, the choice and the rule.

    Only validation utterances are read: test splits never influence the choice.
    """
    validation = [u for path in manifests for u in read_manifest(path, split="validation")]
    if not validation:
        raise ValueError(f"no validation utterances in {', '.join(map(str, manifests))}")
    scaled = ScaledTaskVector(load_whisper(base_dir, device=device), task_vector_path)
    curve = sweep_lambda(scaled, validation, lambdas, options, device)
    return {
        CHOSEN_LAMBDA: choose_lambda(curve, metric, tie_break),
        "rule": f"lowest pooled validation {metric.upper()} over the domains' validation splits; "
                f"ties to the {tie_break} lambda",
        "validation_utterances": len(validation),
        "curve": curve,
    }
