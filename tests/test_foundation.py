"""Pretraining the demo's foundation in stages: a later stage continues an earlier stage's model and tokenizer."""
import pytest
import torch
from safetensors.torch import load_file

from asrmerge.data.manifest import read_manifest
from asrmerge.foundation import prepare_base_model
from speech_world import ARCHITECTURE, build_tiny_corpus, build_tiny_whisper

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def test_a_stage_continues_the_earlier_model_and_keeps_its_tokenizer(corpus, tmp_path):
    earlier = build_tiny_whisper(corpus, seed=3)
    earlier.save(tmp_path / "stage1")
    settings = {"source": "pretrain", "init": str(tmp_path / "stage1"), "audio_seconds": 6,
                "pretrain": {"steps": 2, "learning_rate": 1e-4, "batch_size": 4}}
    utterances = read_manifest(corpus, split="train")
    prepare_base_model(settings, utterances, tmp_path / "stage2", CPU, seed=0)
    before, after = load_file(tmp_path / "stage1" / "model.safetensors"), load_file(tmp_path / "stage2" / "model.safetensors")
    assert (tmp_path / "stage2" / "tokenizer.json").read_text() == (tmp_path / "stage1" / "tokenizer.json").read_text()
    changes = [float((after[name] - before[name]).abs().max()) for name in before]
    assert 0 < max(changes) < 0.01  # trained on, from the earlier weights (a new model would differ by O(1))


def test_a_stage_with_another_window_is_refused(corpus, tmp_path):
    build_tiny_whisper(corpus).save(tmp_path / "stage1")
    settings = {"source": "pretrain", "init": str(tmp_path / "stage1"), "audio_seconds": 10,
                "architecture": ARCHITECTURE, "pretrain": {"steps": 1, "learning_rate": 1e-4}}
    with pytest.raises(ValueError, match="reads 6 s windows, base_model.audio_seconds is 10"):
        prepare_base_model(settings, read_manifest(corpus, split="train"), tmp_path / "stage2", CPU, seed=0)
