"""A tiny speech world for unit tests: a few espeak utterances, a small Whisper with a trained tokenizer, and task
vectors made by the command line."""
from __future__ import annotations

from pathlib import Path

from asrmerge.data.corpus import build_set
from asrmerge.data.manifest import read_manifest
from asrmerge.models.whisper import LoadedWhisper, build_small_whisper, feature_extractor_for, train_tokenizer

ARCHITECTURE = dict(num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=128,
                    max_target_positions=64)


def build_tiny_corpus(out_dir: Path, seed: int = 0) -> Path:
    """Train, validation and test splits of one small European Portuguese set; returns the manifest."""
    spec = {"role": "domain", "language": "pt", "text": "weather", "voices": ["pt+m1"], "rate": [160, 170],
            "pitch": [40, 50], "channel": [], "sizes": {"train": 8, "validation": 4, "test": 4}}
    return build_set("weather", spec, out_dir, seed=seed)


def build_tiny_whisper(manifest: Path, seed: int = 0) -> LoadedWhisper:
    texts = [u.text for u in read_manifest(manifest)]
    tokenizer = train_tokenizer(texts * 4, ["pt", "en"], vocab_size=300)
    model = build_small_whisper(tokenizer, ARCHITECTURE, audio_seconds=6, seed=seed)
    return LoadedWhisper(model.eval(), feature_extractor_for(80, 6), tokenizer)


def task_vectors_by_command(base: Path, finetuned: list[Path], folder: Path) -> list[Path]:
    """`asrmerge task-vector` of every fine-tune against `base`, into `folder` (tau0.safetensors, ...)."""
    from asrmerge.cli import main

    taus = []
    for i, model in enumerate(finetuned):
        taus.append(folder / f"tau{i}.safetensors")
        assert main(["task-vector", "--base", str(base), "--finetuned", str(model), "--out", str(taus[-1])]) == 0
    return taus


def micro_config_file(folder: Path, sets: dict | None = None) -> Path:
    """The micro config (tests/data/micro_config.yaml) with its results under `folder` and `sets` added to its
    corpus, written to folder/config.yaml: a run's config for the commands that read one (asrmerge corpus, ...)."""
    import yaml

    config = yaml.safe_load((Path(__file__).parent / "data" / "micro_config.yaml").read_text())
    config["results"] = str(folder / "results")
    config["corpus"]["sets"].update(sets or {})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
