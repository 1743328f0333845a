"""AdaMerging's coefficients: learned by minimising the entropy of the merged model's outputs on unlabeled audio.

AdaMerging (Yang et al., "AdaMerging: Adaptive model merging for multi-task learning", ICLR 2024) merges
θ = θ₀ + Σ_t λ_t τ_t with one coefficient per task (task-wise) or per task and parameter tensor (layer-wise: its
official code gives every parameter tensor its own λ), initialised to a prior (0.3) and learned with Adam on the
Shannon entropy of the merged model's predictions over unlabeled test inputs, clipped to [0, 1] after every step.

For a speech recogniser the prediction is a transcript. Each step here transcribes a batch of unlabeled validation
audio greedily with the current merged model (no gradient), then minimises the mean entropy of the next-token
distributions along those transcripts (the tokens of the transcript and its end-of-text; the prompt is given) by
gradient through θ(λ), teacher-forced on the transcript it just produced. Only audio is read: the labels of the
validation split stay for choosing λ afterwards. Batches are drawn from a seeded permutation per epoch.

The task vectors of every task are held on the device next to the model (T + 2 models of memory), as in the
reference; the coefficients are written per parameter tensor, so the merge engine applies them like any data-aware
statistics (asrmerge.merging.methods.data_aware.adamerging).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

from asrmerge.data.manifest import Utterance
from asrmerge.defaults import default
from asrmerge.evaluation.decoding import greedy_decode
from asrmerge.merging.registry import get_method
from asrmerge.models.whisper import LoadedWhisper, token_cap
from asrmerge.progress import Progress
from asrmerge.training.loop import FeatureCache, batch_indices

log = logging.getLogger(__name__)

GRANULARITIES = ("task", "layer")


#: The registered method's parameters: the one declaration of the learning's defaults.
_METHOD_PARAMS = get_method("adamerging").params


@dataclass(frozen=True)
class AdaMergingOptions:
    """The learning of the coefficients (the parameters of the registered method `adamerging`)."""

    granularity: str = _METHOD_PARAMS["granularity"].default
    steps: int = _METHOD_PARAMS["steps"].default
    learning_rate: float = _METHOD_PARAMS["learning_rate"].default
    init: float = _METHOD_PARAMS["init"].default
    batch_size: int = _METHOD_PARAMS["batch_size"].default
    max_new_tokens: int | str = default("evaluation.max_new_tokens")  # asrmerge.models.whisper.token_cap
    seed: int = default("seed")

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")


def _decoder_batch(prompt: list[int], transcripts: Sequence[list[int]], eot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs prompt + transcript (padded with end-of-text) and the mask of the positions whose prediction is
    a transcript token or its end-of-text."""
    width = len(prompt) + max(len(t) for t in transcripts)
    inputs = torch.full((len(transcripts), width), eot, dtype=torch.long)
    predicted = torch.zeros((len(transcripts), width), dtype=torch.bool)
    for row, tokens in enumerate(transcripts):
        sequence = prompt + list(tokens)
        inputs[row, : len(sequence)] = torch.tensor(sequence)
        predicted[row, len(prompt) - 1 : len(sequence)] = True
    return inputs, predicted


def learn_coefficients(
    whisper: LoadedWhisper, task_vectors: Mapping[str, torch.Tensor], utterances: Sequence[Utterance],
    options: AdaMergingOptions, device: torch.device,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Parameter name -> its learned coefficients (T,), and the entropy curve, for θ₀ + Σ_t λ_t τ_t.

    `task_vectors` maps every parameter that the merge changes to its stacked task vectors (T, *shape)."""
    if not utterances:
        raise ValueError("AdaMerging needs unlabeled audio to learn its coefficients; none was given")
    model = whisper.model.eval()
    parameters = dict(model.named_parameters())
    unknown = sorted(set(task_vectors) - set(parameters))
    if unknown:
        raise ValueError(f"task vector tensor {unknown[0]!r} is not a parameter of the model")
    names = list(task_vectors)
    num_tasks = next(iter(task_vectors.values())).shape[0]
    rows = 1 if options.granularity == "task" else len(names)
    coefficients = torch.full((rows, num_tasks), options.init, device=device, requires_grad=True)
    row_of = {name: 0 if options.granularity == "task" else i for i, name in enumerate(names)}
    theta0 = {name: parameters[name].detach().clone() for name in names}
    stacks = {name: task_vectors[name].to(device=device, dtype=theta0[name].dtype) for name in names}
    optimiser = torch.optim.Adam([coefficients], lr=options.learning_rate)
    features = FeatureCache(whisper)
    curve, progress = [], Progress(options.steps)

    def merged() -> dict[str, torch.Tensor]:
        return {name: theta0[name] + torch.tensordot(coefficients[row_of[name]], stacks[name], dims=1) for name in names}

    for step in range(options.steps):
        batch = [utterances[i] for i in batch_indices(len(utterances), options.batch_size, step, options.seed)]
        weights = merged()
        with torch.no_grad():
            for name in names:
                parameters[name].copy_(weights[name])
        total, count = torch.zeros((), device=device), 0
        for language in sorted({u.language for u in batch}):
            group = [u for u in batch if u.language == language]
            mel = features(group, device)
            prompt = whisper.prompt_ids(language)
            transcripts = greedy_decode(whisper, mel, prompt, token_cap(whisper, options.max_new_tokens))
            inputs, predicted = _decoder_batch(prompt, transcripts, whisper.eot_id)
            logits = functional_call(model, weights, kwargs={"input_features": mel, "decoder_input_ids": inputs.to(device),
                                                             "use_cache": False}).logits.float()
            log_p = torch.log_softmax(logits[predicted.to(device)], dim=-1)
            total = total - (log_p.exp() * log_p).sum()
            count += int(predicted.sum())
        entropy = total / count
        optimiser.zero_grad()
        entropy.backward()
        optimiser.step()
        with torch.no_grad():
            coefficients.clamp_(0.0, 1.0)
        curve.append({"step": step, "entropy": float(entropy.detach())})
        if (step + 1) % 10 == 0 or step + 1 == options.steps:
            log.info("AdaMerging step %s, entropy %.4f", progress(step + 1), curve[-1]["entropy"])
    with torch.no_grad():  # the model's weights back to θ₀
        for name in names:
            parameters[name].copy_(theta0[name])
    learned = coefficients.detach().cpu()
    return {name: learned[row_of[name]].clone() for name in names}, curve


def write_coefficients(
    coefficients: Mapping[str, torch.Tensor], curve: Sequence[dict], options: AdaMergingOptions, out: str | Path,
    summary: str | Path, provenance: Mapping[str, str],
) -> Path:
    """The coefficients as a statistics file of kind "coefficients" (for the merge) and a JSON summary beside it."""
    from asrmerge.atomic import write_json
    from asrmerge.merging.checkpoint import save_tensors
    from asrmerge.merging.spec import STATISTICS_FILE_KIND

    metadata = {"format": "pt", "kind": STATISTICS_FILE_KIND, "statistics": "coefficients", **provenance}
    save_tensors(out, coefficients, metadata)
    stacked = torch.stack(list(coefficients.values()))
    write_json(summary, {
        "options": options.__dict__, **provenance, "entropy": [point["entropy"] for point in curve],
        "mean_coefficient_per_task": stacked.mean(dim=0).tolist(),
        "coefficients": {name: value.tolist() for name, value in coefficients.items()},
    }, indent=1)
    return Path(out)
