"""The base model of an experiment: a released Whisper, or a small Whisper pretrained here on the general sets."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asrmerge.data.manifest import Utterance
from asrmerge.models.whisper import LoadedWhisper, build_small_whisper, feature_extractor_for, load_whisper, train_tokenizer
from asrmerge.training import TrainingOptions, train

log = logging.getLogger(__name__)


def pretrain_small_whisper(
    settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: Path, device: torch.device, seed: int
) -> None:
    """Train a tokenizer on the general transcripts, build the small model and pretrain it on the general audio."""
    languages = sorted({u.language for u in general})
    tokenizer = train_tokenizer((u.text for u in general), languages, settings["vocab_size"])
    architecture = settings["architecture"]
    model = build_small_whisper(tokenizer, architecture, settings["audio_seconds"], seed)
    whisper = LoadedWhisper(model, feature_extractor_for(architecture["num_mel_bins"], settings["audio_seconds"]), tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("small Whisper: %.2fM parameters, %d tokens, languages %s", n_params / 1e6, len(tokenizer), languages)
    train(whisper, general, TrainingOptions(**settings["pretrain"], seed=seed), out_dir, device)


def copy_pretrained(settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: Path, device: torch.device, seed: int) -> None:
    """Load a released Whisper (hub id or folder) and keep a local copy, so every later stage reads one folder."""
    load_whisper(settings["path"], device="cpu").save(out_dir)


BASE_SOURCES = {"pretrain": pretrain_small_whisper, "pretrained": copy_pretrained}


def prepare_base_model(
    settings: Mapping[str, Any], general: Sequence[Utterance], out_dir: str | Path, device: torch.device, seed: int
) -> None:
    BASE_SOURCES[settings["source"]](settings, general, Path(out_dir), device, seed)
