"""Full fine-tuning (and pretraining) of a transformers Whisper on manifest utterances.

One loop serves the per-domain fine-tunes (ID-FT), the joint multi-domain fine-tune (Full-FT) and the demo's
foundation pretraining. It supports gradient accumulation, linear warm-up then linear decay, bf16/fp16 autocast on
GPU, gradient checkpointing, replay of general data inside each batch (to limit forgetting), and resumption: the
state is checkpointed every `checkpoint_every` steps and a restarted run continues from it with the same batches,
provided it has the same inputs (options, starting weights, tokenizer, data: `training_fingerprint`); a state of other
inputs is discarded with a warning.

Pretraining a small Whisper from scratch on little data benefits from an auxiliary CTC loss on the encoder
(`ctc_weight` > 0): without it the decoder learns a language model that ignores the audio. The CTC head is a linear
layer used only during training; the saved model is a plain Whisper, with the head beside it (CTC_HEAD_FILE) so that
a later pretraining stage continues it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from asrmerge import layout
from asrmerge.atomic import staged_path
from asrmerge.defaults import default
from asrmerge.data.manifest import Utterance, load_audio
from asrmerge.models.whisper import log_mel
from asrmerge.models.whisper import LoadedWhisper
from asrmerge.progress import Progress

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: full: every weight is trained; lora: low-rank adapters on `lora_targets`, merged into the weights when saved.
TRAINING_MODES = ("full", "lora")
#: A LoRA fine-tune's adapters (safetensors: the lora_A / lora_B weights; metadata rank, alpha, targets), saved
#: beside the model whose weights already hold them (W + alpha/rank · B A).
LORA_ADAPTER_FILE = layout.LORA_ADAPTERS
#: The encoder's CTC head in a model folder (safetensors: weight, bias), written when training used one.
CTC_HEAD_FILE = layout.CTC_HEAD


@dataclass(frozen=True)
class TrainingOptions:
    steps: int
    learning_rate: float
    batch_size: int = default("$defs.training.batch_size")
    gradient_accumulation: int = default("$defs.training.gradient_accumulation")
    warmup_steps: int = default("$defs.training.warmup_steps")
    weight_decay: float = default("$defs.training.weight_decay")
    max_grad_norm: float = default("$defs.training.max_grad_norm")
    replay_fraction: float = default("$defs.training.replay_fraction")
    precision: str = default("$defs.training.precision")
    gradient_checkpointing: bool = default("$defs.training.gradient_checkpointing")
    checkpoint_every: int = default("$defs.training.checkpoint_every")
    ctc_weight: float = default("$defs.training.ctc_weight")
    mode: str = default("$defs.training.mode")
    lora_rank: int = default("$defs.training.lora_rank")
    lora_alpha: float = default("$defs.training.lora_alpha")
    lora_targets: tuple[str, ...] = default("$defs.training.lora_targets")
    seed: int = default("seed")

    def __post_init__(self) -> None:
        if self.mode not in TRAINING_MODES:
            raise ValueError(f"training mode must be one of {TRAINING_MODES}, got {self.mode!r}")


def label_sequence(whisper: LoadedWhisper, utterance: Utterance) -> list[int]:
    """Prompt + transcript tokens + end-of-text: the decoder reads it shifted by one."""
    text_ids = whisper.tokenizer.encode(" " + utterance.text.strip(), add_special_tokens=False)
    return whisper.prompt_ids(utterance.language) + text_ids + [whisper.eot_id]


class FeatureCache:
    """Log-mel features of the utterances seen so far, kept (in float16) until `max_bytes` are used.

    Small corpora are read over many epochs: from the second epoch on, a batch costs no audio decoding or STFT. A
    feature is rounded to float16 whether or not it is kept, so training never depends on what the cache holds: a run
    resumed with a cold cache is bit for bit the uninterrupted one.
    """

    def __init__(self, whisper: LoadedWhisper, max_bytes: int = 2 << 30):
        self.whisper, self.max_bytes, self.used = whisper, max_bytes, 0
        self.features: dict[str, torch.Tensor] = {}

    def __call__(self, utterances: Sequence[Utterance], device: torch.device) -> torch.Tensor:
        missing = [u for u in utterances if u.id not in self.features]
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            sr, window = self.whisper.feature_extractor.sampling_rate, self.whisper.feature_extractor.n_samples
            audios = [load_audio(u.audio, sr) for u in missing]
            for utterance, audio in zip(missing, audios):
                if len(audio) > window:  # its transcript would be trained against a cut recording
                    raise ValueError(f"utterance {utterance.id} ({utterance.audio}) lasts {len(audio) / sr:.1f} s, longer "
                                     f"than the model's {window / sr:.0f} s window: split it, or leave it out of training")
            computed = log_mel(self.whisper, audios, torch.device("cpu"))
            fresh = dict(zip((u.id for u in missing), computed.to(torch.float16)))
            for uid, feature in fresh.items():
                size = feature.numel() * 2
                if self.used + size <= self.max_bytes:
                    self.features[uid] = feature
                    self.used += size
        stacked = torch.stack([(fresh[u.id] if u.id in fresh else self.features[u.id]).float() for u in utterances])
        return stacked.to(device=device, dtype=self.whisper.model.dtype)


def teacher_forcing(whisper: LoadedWhisper, utterances: Sequence[Utterance]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's inputs for the utterances' transcripts (padded with end-of-text), the tokens it must predict at
    each position (-100 where nothing is predicted: the prompt and the padding) and which positions hold a real input
    token, each (batch, positions)."""
    sequences = [label_sequence(whisper, u) for u in utterances]
    max_positions = whisper.model.config.max_target_positions
    too_long = [u.id for u, s in zip(utterances, sequences) if len(s) - 1 > max_positions]
    if too_long:
        raise ValueError(f"utterance {too_long[0]}: transcript longer than the decoder's {max_positions} positions")
    width = max(len(s) for s in sequences) - 1
    inputs = torch.full((len(sequences), width), whisper.eot_id, dtype=torch.long)
    targets = torch.full((len(sequences), width), -100, dtype=torch.long)
    valid = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        inputs[row, : len(seq) - 1] = torch.tensor(seq[:-1])
        targets[row, : len(seq) - 1] = torch.tensor(seq[1:])
        valid[row, : len(seq) - 1] = True
        prompt_length = len(whisper.prompt_ids(utterances[row].language))
        targets[row, : prompt_length - 1] = -100  # language/task/timestamp tokens are part of the prompt
    return inputs, targets, valid


def batch_loss(
    whisper: LoadedWhisper, utterances: Sequence[Utterance], device: torch.device,
    ctc_head: torch.nn.Linear | None = None, ctc_weight: float = default("$defs.training.ctc_weight"), features: FeatureCache | None = None,
) -> torch.Tensor:
    """Mean token cross-entropy of the transcripts (the prompt tokens are given, not predicted), plus the weighted
    CTC loss of the encoder when a CTC head is given (its blank is the last class)."""
    features = (features or FeatureCache(whisper, max_bytes=0))(utterances, device)
    inputs, targets, _ = teacher_forcing(whisper, utterances)
    encoder_states = whisper.model.model.encoder(features).last_hidden_state
    logits = whisper.model(encoder_outputs=(encoder_states,), decoder_input_ids=inputs.to(device)).logits
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.to(device), ignore_index=-100)
    if ctc_head is None:
        return loss
    return (1 - ctc_weight) * loss + ctc_weight * ctc_loss(whisper, ctc_head, encoder_states, utterances)


def new_ctc_head(whisper: LoadedWhisper, device: torch.device, weights: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Linear:
    """The encoder's CTC head: one class per token plus the blank (the last class); `weights` continue an earlier
    head (a model folder's CTC_HEAD_FILE), else it is drawn from the torch seed."""
    config = whisper.model.config
    head = torch.nn.Linear(config.d_model, config.vocab_size + 1)
    if weights is not None:
        head.load_state_dict(weights)
    return head.to(device)


def ctc_loss(
    whisper: LoadedWhisper, ctc_head: torch.nn.Linear, encoder_states: torch.Tensor, utterances: Sequence[Utterance]
) -> torch.Tensor:
    """CTC loss of the encoder states against the transcript tokens (without prompt and end-of-text)."""
    transcripts = [label_sequence(whisper, u)[len(whisper.prompt_ids(u.language)) : -1] for u in utterances]
    log_probs = ctc_head(encoder_states).float().log_softmax(-1).transpose(0, 1)  # (frames, batch, classes)
    return torch.nn.functional.ctc_loss(
        log_probs,
        torch.tensor([t for seq in transcripts for t in seq], dtype=torch.long),
        input_lengths=torch.full((len(transcripts),), log_probs.shape[0], dtype=torch.long),
        target_lengths=torch.tensor([len(seq) for seq in transcripts], dtype=torch.long),
        blank=ctc_head.out_features - 1,
        zero_infinity=True,
    )


def fit_ctc_head(
    whisper: LoadedWhisper, utterances: Sequence[Utterance], options: TrainingOptions, steps: int, learning_rate: float,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """A new CTC head fitted on the frozen encoder (batches of `options`): for continuing a model saved without its
    head, so that the continued training does not start by pushing a random head's gradients through a trained
    encoder."""
    torch.manual_seed(options.seed)
    head = new_ctc_head(whisper, device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate)
    cache = FeatureCache(whisper)
    whisper.model.to(device).eval()
    # The encoder is frozen: each utterance's states are computed once, on its first batch, and kept (at most steps x
    # batch size of them); a row's states do not depend on the other rows of its batch, so the head is the one
    # trained on states recomputed at every step (tests/test_training.py).
    encoded: dict[str, torch.Tensor] = {}
    for step in range(steps):
        batch = [utterances[i] for i in batch_indices(len(utterances), options.batch_size, step, options.seed + 2)]
        new = list({u.id: u for u in batch if u.id not in encoded}.values())
        if new:
            with torch.no_grad():
                encoded.update(zip((u.id for u in new), whisper.model.model.encoder(cache(new, device)).last_hidden_state))
        loss = ctc_loss(whisper, head, torch.stack([encoded[u.id] for u in batch]), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log.info("CTC head on the frozen encoder: step %d/%d loss %.4f", step + 1, steps, float(loss))
    return {name: tensor.detach().cpu() for name, tensor in head.state_dict().items()}


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The items of batch `step`: epochs are seeded permutations, so any step can be recomputed after a restart."""
    per_epoch = max(1, n_items // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    return order[position * batch_size : (position + 1) * batch_size].tolist()


def learning_rate_factor(step: int, options: TrainingOptions) -> float:
    """Linear warm-up to the peak, then linear decay to zero at the last step."""
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    remaining = options.steps - options.warmup_steps
    return max(0.0, (options.steps - step) / remaining) if remaining > 0 else 1.0


#: Fault injection for tests of interrupted runs (tests/test_slurm.py): a folder; a run writing `out_dir` waits before
#: its first step while `<folder>/<out_dir's name>.hold` exists, so that a test can cancel it at a known point.
HOLD_ENV = "ASRMERGE_TRAINING_HOLDS"


def hold_before_training(out_dir: Path) -> None:
    holds = os.environ.get(HOLD_ENV)
    hold = Path(holds) / f"{out_dir.name}.hold" if holds else None
    if hold is not None and hold.exists():
        log.info("holding before the first step while %s exists (%s)", hold, HOLD_ENV)
        while hold.exists():
            time.sleep(0.2)
        log.info("hold released")


def train(
    whisper: LoadedWhisper,
    train_set: Sequence[Utterance],
    options: TrainingOptions,
    out_dir: str | Path,
    device: torch.device,
    replay_set: Sequence[Utterance] = (),
    ctc_head_weights: Mapping[str, torch.Tensor] | None = None,
) -> list[dict]:
    """Train in place and save the final model to `out_dir`; returns the loss curve (also in `out_dir/loss.csv`).
    With `ctc_weight` > 0 the encoder's CTC head (from `ctc_head_weights`, else a new one) is trained
    too and saved beside the model as CTC_HEAD_FILE.

    The resumable state lives beside the output, in `<out_dir>.resume/`, while training runs (a workflow manager may
    delete an unfinished `out_dir` before rerunning the job, so the state must not be inside it); it is removed once
    the model is saved.
    """
    if not train_set:
        raise ValueError("the training set is empty")
    out_dir = Path(out_dir)
    checkpoint_dir = resume_dir(out_dir)
    model = whisper.model.to(device)
    lora = attach_lora(model, options) if options.mode == "lora" else None
    model.train()
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if lora is not None:
            model.enable_input_require_grads()  # the frozen embeddings would otherwise cut the checkpointed graph
    ctc_head = None
    if options.ctc_weight > 0:
        torch.manual_seed(options.seed)
        ctc_head = new_ctc_head(whisper, device, ctc_head_weights)
    trained = [p for p in model.parameters() if p.requires_grad] + (list(ctc_head.parameters()) if ctc_head else [])
    optimizer = torch.optim.AdamW(trained, lr=options.learning_rate, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, options))
    scaler = torch.amp.GradScaler(enabled=options.precision == "fp16" and device.type == "cuda")
    # Mixed precision is a GPU setting: on a CPU the same config trains in float32 (bf16 autocast there is slow on
    # most CPUs, and it would also reach the log-mel front end, which must stay float32).
    autocast_dtype = PRECISIONS[options.precision] if device.type == "cuda" else None
    if PRECISIONS[options.precision] is not None and autocast_dtype is None:
        log.info("precision %s applies on a GPU; training on %s in float32", options.precision, device.type)
    curve: list[dict] = []
    start = 0
    fingerprint = training_fingerprint(whisper, train_set, replay_set, options, ctc_head_weights)
    state = _load_state(checkpoint_dir, fingerprint, device)
    if state is not None:
        model.load_state_dict(state["model"])
        if ctc_head is not None:
            ctc_head.load_state_dict(state["ctc_head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        curve, start = state["curve"], state["step"]
        log.info("resuming from step %d of %d (%s)", start, options.steps, checkpoint_dir)

    hold_before_training(out_dir)
    cache = FeatureCache(whisper)
    n_replay = int(round(options.batch_size * options.replay_fraction)) if replay_set else 0
    n_main = options.batch_size - n_replay
    progress = Progress(options.steps, done_before=start)
    for step in range(start, options.steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(options.gradient_accumulation):
            micro_step = step * options.gradient_accumulation + micro
            batch = [train_set[i] for i in batch_indices(len(train_set), n_main, micro_step, options.seed)]
            if n_replay:
                batch += [replay_set[i] for i in batch_indices(len(replay_set), n_replay, micro_step, options.seed + 1)]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss = batch_loss(whisper, batch, device, ctc_head, options.ctc_weight, cache) / options.gradient_accumulation
            scaler.scale(loss).backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total} at step {step}: lower the learning rate")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trained, options.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        curve.append({"step": step + 1, "loss": total, "learning_rate": scheduler.get_last_lr()[0]})
        scheduler.step()
        if (step + 1) % 10 == 0 or step + 1 == options.steps:
            log.info("step %s, loss %.4f", progress(step + 1), total)
        if (step + 1) % options.checkpoint_every == 0 and step + 1 < options.steps:
            _save_state(checkpoint_dir, model, ctc_head, optimizer, scheduler, scaler, curve, step + 1, fingerprint)

    model.eval()
    if options.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    extra_files: dict[str, str | bytes] = {layout.LOSS_CURVE: curve_csv(curve)}
    if ctc_head is not None:
        extra_files[CTC_HEAD_FILE] = safetensors.torch.save({k: v.contiguous() for k, v in ctc_head.state_dict().items()})
    if lora is not None:
        extra_files[LORA_ADAPTER_FILE] = lora_adapters(model, options)
        whisper.model = lora.merge_and_unload()
    whisper.save(out_dir, extra_files=extra_files)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return curve


def attach_lora(model: torch.nn.Module, options: TrainingOptions):
    """Low-rank adapters (peft LoRA, no dropout, no bias) on the linear layers named by `options.lora_targets`,
    injected into `model` itself; every other weight is frozen. The adapters' initial values come from the seed."""
    from peft import LoraConfig, LoraModel

    torch.manual_seed(options.seed)
    config = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha, target_modules=list(options.lora_targets),
                        lora_dropout=0.0, bias="none")
    try:
        return LoraModel(model, config, "default")
    except ValueError as err:  # peft's message when no module matches
        raise ValueError(f"lora_targets {list(options.lora_targets)}: {err}") from None


def lora_adapters(model: torch.nn.Module, options: TrainingOptions) -> bytes:
    """The trained adapters as safetensors bytes (LORA_ADAPTER_FILE)."""
    adapters = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if "lora_" in name}
    metadata = {"format": "pt", "rank": str(options.lora_rank), "alpha": repr(float(options.lora_alpha)),
                "targets": json.dumps(list(options.lora_targets))}
    return safetensors.torch.save(adapters, metadata=metadata)


def resume_dir(out_dir: str | Path) -> Path:
    """Where a run writing `out_dir` keeps its resumable state."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".resume")


def training_fingerprint(
    whisper: LoadedWhisper, train_set: Sequence[Utterance], replay_set: Sequence[Utterance], options: TrainingOptions,
    ctc_head: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """What a run is made from: the options, the starting weights (CTC head included) and tokenizer, and every
    training and replay utterance (id, transcript, language, audio bytes). A resume state is used only by a run with
    the same one."""
    digest = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    digest.update(whisper.tokenizer.backend_tokenizer.to_str().encode())
    starting = {**whisper.model.state_dict(), **{f"ctc_head.{k}": v for k, v in (ctc_head or {}).items()}}
    for name, tensor in sorted(starting.items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for role, utterances in (("train", train_set), ("replay", replay_set)):
        for utterance in utterances:
            digest.update(json.dumps([role, utterance.id, utterance.text, utterance.language]).encode())
            digest.update(hashlib.sha256(Path(utterance.audio).read_bytes()).digest())
    return digest.hexdigest()


def _load_state(checkpoint_dir: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The resume state in `checkpoint_dir` if it was written by a run of the same inputs, else None (a state file of
    other inputs, or one that is not a plain tensor file, is deleted: it would resume the wrong training)."""
    path = checkpoint_dir / "state.pt"
    if not path.is_file():
        return None
    try:
        # weights_only: tensors and plain containers only; a planted pickle cannot run code here.
        state = torch.load(path, map_location=device, weights_only=True)
        reason = None if state.get("fingerprint") == fingerprint else "made from other inputs (options, starting weights or data)"
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
        state, reason = None, f"unreadable as a tensor file ({type(err).__name__})"
    if reason is None:
        return state
    log.warning("resume state %s is %s: starting over", path, reason)
    path.unlink()  # only the file this loop writes; the folder goes once training ends
    return None


def _save_state(checkpoint_dir: Path, model, ctc_head, optimizer, scheduler, scaler, curve, step: int, fingerprint: str) -> None:
    with staged_path(checkpoint_dir / "state.pt") as staged:
        torch.save(
            {"model": model.state_dict(), "ctc_head": ctc_head.state_dict() if ctc_head else None,
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "curve": curve, "step": step, "fingerprint": fingerprint},
            staged,
        )


def curve_csv(curve: Sequence[dict]) -> str:
    """The loss curve as CSV text (step, loss, learning_rate)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["step", "loss", "learning_rate"])
    writer.writeheader()
    writer.writerows(curve)
    return text.getvalue()
