"""The base model of an experiment: a released Whisper, or a small Whisper pretrained here on the general sets."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from asrmerge.data.manifest import Utterance
from asrmerge.models.whisper import (
    LoadedWhisper, build_small_whisper, complete_generation_config, feature_extractor_for, in_whisper_token_order,
    load_whisper, train_tokenizer,
)
from asrmerge.training.loop import CTC_HEAD_FILE, TrainingOptions, fit_ctc_head, train

log = logging.getLogger(__name__)


def pretrain_small_whisper(
    settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: Path, device: torch.device, seed: int,
    generation: Mapping[str, Any] | None = None,
) -> None:
    """Pretrain the small model on the general audio: a new model with a tokenizer trained on the general
    transcripts, or, with `init`, the model folder of an earlier stage (its tokenizer and weights); `generation`
    (how the run evaluates) goes into its generation config."""
    options = TrainingOptions(**settings["pretrain"], seed=seed)
    head = None
    if settings.get("init"):
        whisper = continued_model(settings)
        if options.ctc_weight > 0:
            head = continued_ctc_head(Path(settings["init"]), whisper, general, options, device)
    else:
        whisper = new_small_whisper(settings, general, seed)
    if generation is not None:
        complete_generation_config(whisper, **generation)
    n_params = sum(p.numel() for p in whisper.model.parameters())
    log.info("small Whisper: %.2fM parameters, %d tokens", n_params / 1e6, len(whisper.tokenizer))
    train(whisper, general, options, out_dir, device, ctc_head_weights=head)


#: Steps that fit a new CTC head on the frozen encoder of an earlier stage saved without one, and their learning
#: rate relative to the stage's: a linear layer on fixed features takes ten times the rate (measured: CTC loss 1.05
#: after 40 steps at 1e-2, 1.65 after 60 at 1e-3).
CTC_HEAD_FIT_STEPS = 150
CTC_HEAD_FIT_RATE = 10.0


def continued_ctc_head(
    folder: Path, whisper: LoadedWhisper, general: Sequence[Utterance], options: TrainingOptions, device: torch.device
) -> dict[str, torch.Tensor]:
    """The earlier stage's CTC head, or (a folder saved without it) a new head fitted on its frozen encoder."""
    if (folder / CTC_HEAD_FILE).is_file():
        return safetensors.torch.load_file(folder / CTC_HEAD_FILE)
    log.warning("%s holds no CTC head (%s): fitting a new one on the frozen encoder for %d steps first",
                folder, CTC_HEAD_FILE, CTC_HEAD_FIT_STEPS)
    return fit_ctc_head(whisper, general, options, CTC_HEAD_FIT_STEPS, CTC_HEAD_FIT_RATE * options.learning_rate, device)


def new_small_whisper(settings: Mapping[str, Any], general: Sequence[Utterance], seed: int) -> LoadedWhisper:
    languages = sorted({u.language for u in general})
    tokenizer = train_tokenizer((u.text for u in general), languages, settings["vocab_size"])
    architecture = settings["architecture"]
    model = build_small_whisper(tokenizer, architecture, settings["audio_seconds"], seed)
    log.info("new model and tokenizer, languages %s", languages)
    # In Whisper's token order with Whisper's tokenizer class from the start, so that this model, its fine-tunes and
    # merges load in transformers' ASR pipeline as released Whisper does (in_whisper_token_order says why).
    whisper, _ = in_whisper_token_order(
        LoadedWhisper(model, feature_extractor_for(architecture["num_mel_bins"], settings["audio_seconds"]), tokenizer))
    return whisper


def continued_model(settings: Mapping[str, Any]) -> LoadedWhisper:
    """The earlier stage's model in float32, checked to read the configured window."""
    whisper = load_whisper(settings["init"], device="cpu")
    window = whisper.feature_extractor.n_samples / whisper.feature_extractor.sampling_rate
    if round(window) != settings["audio_seconds"]:
        raise ValueError(f"base_model.init {settings['init']} reads {window:g} s windows, "
                         f"base_model.audio_seconds is {settings['audio_seconds']}")
    log.info("continuing from %s", settings["init"])
    return whisper


def copy_pretrained(
    settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: Path, device: torch.device, seed: int,
    generation: Mapping[str, Any] | None = None,
) -> None:
    """Load a released Whisper (hub id or folder) and keep a local copy, so every later stage reads one folder.

    A window shorter than the checkpoint's (30 s for released Whisper) keeps the first rows of the encoder's
    positional table: short utterances then cost a fraction of the encoder work, which matters on a CPU.
    `generation` (language, num_beams: how the run evaluates) goes into its generation config, which every
    fine-tune and exported merge of the run inherits.
    """
    whisper = load_whisper(settings["path"], device="cpu")
    positions = int(round(settings["audio_seconds"] * 50))
    if positions < whisper.model.config.max_source_positions:
        log.info("window cut to %.1f s (%d encoder positions)", settings["audio_seconds"], positions)
        whisper = shorten_window(whisper, settings["audio_seconds"])
    if generation is not None:
        complete_generation_config(whisper, **generation)
    whisper.save(out_dir)


def shorten_window(whisper: LoadedWhisper, audio_seconds: int) -> LoadedWhisper:
    """The same model reading `audio_seconds` windows: positional table sliced, front end re-sized."""
    positions = int(round(audio_seconds * 50))
    table = whisper.model.model.encoder.embed_positions
    table.weight = torch.nn.Parameter(table.weight.data[:positions].clone(), requires_grad=False)
    table.num_embeddings = positions
    whisper.model.config.max_source_positions = positions
    extractor = feature_extractor_for(whisper.model.config.num_mel_bins, audio_seconds)
    return LoadedWhisper(whisper.model, extractor, whisper.tokenizer)


def adopt_finetune(checkpoint: str | Path, base_dir: str | Path) -> LoadedWhisper:
    """A user's fine-tune (folder or hub id) made to read the base model's window: a longer positional table (a
    released 30 s Whisper fine-tuned as released) is sliced as the base's was; any other difference from the base
    is an error naming both folders."""
    whisper, base = load_whisper(checkpoint, device="cpu"), load_whisper(base_dir, device="cpu")
    if whisper.model.config.max_source_positions > base.model.config.max_source_positions:
        window = base.feature_extractor.n_samples / base.feature_extractor.sampling_rate
        log.info("fine-tune %s: window cut to the base's %.0f s", checkpoint, window)
        whisper = shorten_window(whisper, round(window))
    shapes = {name: list(t.shape) for name, t in whisper.model.state_dict().items()}
    base_shapes = {name: list(t.shape) for name, t in base.model.state_dict().items()}
    for name in sorted(shapes.keys() | base_shapes.keys()):
        if shapes.get(name) != base_shapes.get(name):
            raise ValueError(f"fine-tune {checkpoint} does not fit the base model {base_dir}: tensor {name} is "
                             f"{shapes.get(name, 'absent')} there, {base_shapes.get(name, 'absent')} in the base")
    return whisper


def prepare_base_model(
    settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: str | Path, device: torch.device, seed: int,
    generation: Mapping[str, Any] | None = None,
) -> None:
    """The base model as config `base_model` says, with the run's `generation` settings in its generation config
    (which every fine-tune and exported merge of the run inherits)."""
    if settings["source"] == "pretrained":
        copy_pretrained(settings, general, Path(out_dir), device, seed, generation)
    else:
        pretrain_small_whisper(settings, general, Path(out_dir), device, seed, generation)
