"""Statistics of a domain for the data-aware merges: RegMean's Gram matrices and Fisher merging's diagonal Fisher.

Both are computed with the domain's fine-tuned model on `utterances` utterances of the domain's train split (a
seeded draw), as the references do (FusionBench computes them with each fine-tuned model on its own task's data),
and written as one safetensors file per domain and kind (metadata: kind "statistics", which statistics, the model,
the manifests, the utterances used):

- gram: for every linear layer whose weight is a tensor of the checkpoint, the mean XᵀX/n of its input vectors X (n of
  them), keyed by the weight's name, shaped (in, in); accumulated in float64. Teacher-forced on the reference
  transcripts; the encoder's inputs are its whole window (as at inference), the decoder's only its real token
  positions (not the padding). `layers` (regexes of weight names) narrows the layers; `max_memory_mb` bounds the
  accumulators, so that a large model fails at once with the key to change rather than running out of memory.
- fisher: for every trainable parameter, the mean over utterances of the squared gradient of the utterance's
  log-likelihood, log p(y | x) summed over its tokens: with `fisher_outputs: empirical` y is the reference
  transcript, with `sampled` a transcript drawn from the model itself (seeded), an estimate of the true Fisher.
  One backward pass per utterance, so the squares are per utterance (FusionBench squares the gradient of a batch).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrmerge.data.manifest import Utterance
from asrmerge.defaults import choices, default
from asrmerge.merging.checkpoint import save_tensors
from asrmerge.merging.spec import PER_TASK_STATISTICS, STATISTICS_FILE_KIND
from asrmerge.models.whisper import LoadedWhisper
from asrmerge.progress import Progress
from asrmerge.training.loop import FeatureCache, teacher_forcing

log = logging.getLogger(__name__)

FISHER_OUTPUTS = ("empirical", "sampled")
#: Decoder linear layers whose inputs are the encoder's states (all its frames), not the decoder's token positions.
ENCODER_STATE_INPUTS = re.compile(r"encoder_attn\.[kv]_proj$")


@dataclass(frozen=True)
class StatisticsOptions:
    """Config `statistics` (asrmerge/schemas/config.schema.yaml documents each key)."""

    utterances: int = default("statistics.utterances")
    batch_size: int = default("statistics.batch_size")
    fisher_outputs: str = default("statistics.fisher_outputs")
    layers: tuple[str, ...] = default("statistics.layers")
    max_memory_mb: float = default("statistics.max_memory_mb")
    storage_dtype: str = default("statistics.storage_dtype")
    seed: int = default("seed")

    def __post_init__(self) -> None:
        if self.fisher_outputs not in FISHER_OUTPUTS:
            raise ValueError(f"statistics.fisher_outputs must be one of {FISHER_OUTPUTS}, got {self.fisher_outputs!r}")
        if self.storage_dtype not in choices("statistics.storage_dtype"):
            raise ValueError(f"statistics.storage_dtype must be one of {choices('statistics.storage_dtype')}, got "
                             f"{self.storage_dtype!r}")


def draw_utterances(utterances: Sequence[Utterance], count: int, seed: int) -> list[Utterance]:
    """`count` utterances drawn without replacement (seeded), in manifest order; all of them when there are fewer."""
    if len(utterances) <= count:
        return list(utterances)
    chosen = np.random.default_rng([seed, count]).choice(len(utterances), size=count, replace=False)
    return [utterances[i] for i in sorted(chosen.tolist())]


def linear_weights(whisper: LoadedWhisper, layers: Sequence[str] = default("statistics.layers")) -> dict[str, torch.nn.Linear]:
    """Weight name -> linear layer, for the layers whose weight is a tensor of its own (Whisper's output projection is
    the token embedding: not a linear map of its own) and, with `layers`, whose weight name matches one regex."""
    patterns = [re.compile(p) for p in layers]
    own = {name for name, _ in whisper.model.named_parameters()}  # tied parameters appear once
    found = {}
    for module_name, module in whisper.model.named_modules():
        name = f"{module_name}.weight"
        if isinstance(module, torch.nn.Linear) and name in own and (not patterns or any(p.search(name) for p in patterns)):
            found[name] = module
    return found


def _batches(items: Sequence[Utterance], size: int) -> list[Sequence[Utterance]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def gram_statistics(
    whisper: LoadedWhisper, utterances: Sequence[Utterance], options: StatisticsOptions, device: torch.device,
) -> dict[str, torch.Tensor]:
    """Weight name -> the mean Gram matrix XᵀX/n of the layer's inputs over `utterances` (module docstring)."""
    layers = linear_weights(whisper, options.layers)
    if not layers:
        raise ValueError(f"statistics.layers {list(options.layers)} match no linear layer of the model")
    needed = sum(m.in_features ** 2 for m in layers.values()) * 8 / 2**20
    if needed > options.max_memory_mb:
        raise ValueError(f"the Gram matrices of {len(layers)} linear layers need {needed:.3g} MiB, more than "
                         f"statistics.max_memory_mb = {options.max_memory_mb}: raise it, or narrow statistics.layers")
    sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=device) for name, m in layers.items()}
    rows = dict.fromkeys(layers, 0)
    decoder_positions: list[torch.Tensor] = []  # the current batch's mask of real decoder tokens

    def accumulate(name: str) -> Callable:
        token_inputs = name.startswith("model.decoder.") and not ENCODER_STATE_INPUTS.search(name.removesuffix(".weight"))

        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            x = x[decoder_positions[0]] if token_inputs else x.reshape(-1, x.shape[-1])
            x = x.to(torch.float64)
            sums[name].addmm_(x.T, x)
            rows[name] += x.shape[0]

        return hook

    handles = [module.register_forward_hook(accumulate(name)) for name, module in layers.items()]
    features = FeatureCache(whisper, max_bytes=0)
    try:
        with torch.no_grad():
            batches = _batches(utterances, options.batch_size)
            progress = Progress(len(batches))
            for done, batch in enumerate(batches, 1):
                inputs, _, valid = teacher_forcing(whisper, batch)
                decoder_positions[:] = [valid.to(device)]
                whisper.model(input_features=features(batch, device), decoder_input_ids=inputs.to(device), use_cache=False)
                log.info("gram statistics: batch %s", progress(done))
    finally:
        for handle in handles:
            handle.remove()
    return {name: (sums[name] / rows[name]).to(torch.float32).cpu() for name in layers}


def _sampled_targets(whisper: LoadedWhisper, features: torch.Tensor, prompt: list[int], generator: torch.Generator) -> list[int]:
    """A transcript drawn token by token from the model's own distribution (prompt excluded, end-of-text included)."""
    model = whisper.model
    tokens = list(prompt)
    with torch.no_grad():
        encoder_states = model.model.encoder(features).last_hidden_state
        while len(tokens) < model.config.max_target_positions:
            logits = model(encoder_outputs=(encoder_states,), decoder_input_ids=torch.tensor([tokens], device=features.device),
                           use_cache=False).logits[0, -1].float()
            token = int(torch.multinomial(torch.softmax(logits, dim=-1).cpu(), 1, generator=generator))
            tokens.append(token)
            if token == whisper.eot_id:
                break
    return tokens[len(prompt):]


def fisher_statistics(
    whisper: LoadedWhisper, utterances: Sequence[Utterance], options: StatisticsOptions, device: torch.device,
) -> dict[str, torch.Tensor]:
    """Parameter name -> the diagonal Fisher information over `utterances` (module docstring), float32."""
    model = whisper.model
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    features = FeatureCache(whisper, max_bytes=0)
    generator = torch.Generator().manual_seed(options.seed)
    progress = Progress(len(utterances))
    for done, utterance in enumerate(utterances, 1):
        feature = features([utterance], device)
        inputs, targets, _ = teacher_forcing(whisper, [utterance])
        if options.fisher_outputs == "sampled":
            prompt = whisper.prompt_ids(utterance.language)
            sequence = prompt + _sampled_targets(whisper, feature, prompt, generator)
            inputs = torch.tensor([sequence[:-1]])
            targets = torch.tensor([[-100] * (len(prompt) - 1) + sequence[len(prompt):]])
        model.zero_grad(set_to_none=True)
        logits = model(input_features=feature, decoder_input_ids=inputs.to(device), use_cache=False).logits
        log_likelihood = -torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), targets.to(device), ignore_index=-100, reduction="sum")
        log_likelihood.backward()
        for name, p in parameters.items():
            if p.grad is not None:
                sums[name] += p.grad.float().square()
        if done % 10 == 0 or done == len(utterances):
            log.info("fisher statistics: utterance %s", progress(done))
    model.zero_grad(set_to_none=True)
    return {name: (total / len(utterances)).cpu() for name, total in sums.items()}


COMPUTE: Mapping[str, Callable[..., dict[str, torch.Tensor]]] = {"gram": gram_statistics, "fisher": fisher_statistics}
assert set(COMPUTE) == set(PER_TASK_STATISTICS)


def write_statistics(
    kind: str, whisper: LoadedWhisper, utterances: Sequence[Utterance], options: StatisticsOptions,
    device: torch.device, out: str | Path, provenance: Mapping[str, str],
) -> Path:
    """Compute `kind` statistics over a draw of `options.utterances` of `utterances` and write them to `out`, stored
    in `options.storage_dtype`."""
    if kind not in COMPUTE:
        raise ValueError(f"unknown statistics {kind!r}; known: {', '.join(COMPUTE)}")
    if not utterances:
        raise ValueError(f"no utterances to compute {kind} statistics from ({', '.join(provenance.values())})")
    drawn = draw_utterances(utterances, options.utterances, options.seed)
    if len(drawn) < options.utterances:
        log.warning("%d utterances asked for, the split has %d: all of them are used", options.utterances, len(drawn))
    whisper.model.eval()
    stored = getattr(torch, options.storage_dtype)
    tensors = {name: tensor.to(stored) for name, tensor in COMPUTE[kind](whisper, drawn, options, device).items()}
    metadata = {"format": "pt", "kind": STATISTICS_FILE_KIND, "statistics": kind, "utterances": str(len(drawn)),
                **({"fisher_outputs": options.fisher_outputs} if kind == "fisher" else {}), **provenance}
    save_tensors(out, tensors, metadata)
    log.info("%s statistics of %d tensors over %d utterances -> %s", kind, len(tensors), len(drawn), out)
    return Path(out)
