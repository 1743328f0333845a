"""Fine-tuning: the loss falls, runs are reproducible, a killed run resumes where it stopped."""
import shutil

import pytest
import torch

from asrmerge.data.manifest import read_manifest
from asrmerge.models.whisper import load_whisper
from asrmerge.training import TrainingOptions, batch_indices, learning_rate_factor, resume_dir, train
from speech_world import build_tiny_corpus, build_tiny_whisper

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def test_a_few_steps_lower_the_loss(corpus, tmp_path):
    utterances = read_manifest(corpus, split="train")
    options = TrainingOptions(steps=16, learning_rate=3e-3, batch_size=4, warmup_steps=2)
    curve = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "model", CPU)
    first, last = curve[0]["loss"], sum(p["loss"] for p in curve[-3:]) / 3
    assert last < 0.85 * first
    assert (tmp_path / "model" / "loss.csv").read_text().startswith("step,loss,learning_rate")
    assert not resume_dir(tmp_path / "model").exists()
    reloaded = load_whisper(tmp_path / "model")
    assert reloaded.prompt_ids("pt") == build_tiny_whisper(corpus).prompt_ids("pt")


def test_ctc_auxiliary_loss_trains(corpus, tmp_path):
    options = TrainingOptions(steps=3, learning_rate=1e-3, batch_size=4, ctc_weight=0.3)
    curve = train(build_tiny_whisper(corpus), read_manifest(corpus, split="train"), options, tmp_path / "m", CPU)
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in curve)


def test_same_seed_same_weights(corpus, tmp_path):
    options = TrainingOptions(steps=3, learning_rate=1e-3, batch_size=4, seed=5)
    utterances = read_manifest(corpus, split="train")
    a = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "a", CPU)
    b = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "b", CPU)
    assert a == b
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_killed_run_resumes_from_its_checkpoint(corpus, tmp_path, monkeypatch):
    utterances = read_manifest(corpus, split="train")
    options = TrainingOptions(steps=6, learning_rate=1e-3, batch_size=4, checkpoint_every=3, seed=1)
    straight = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "straight", CPU)

    import asrmerge.training as training

    real_loss, calls = training.batch_loss, {"n": 0}

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside step 5, after the checkpoint of step 3
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "batch_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train(build_tiny_whisper(corpus), utterances, options, tmp_path / "resumed", CPU)
    assert (resume_dir(tmp_path / "resumed") / "state.pt").is_file()
    shutil.rmtree(tmp_path / "resumed", ignore_errors=True)  # as a workflow manager does with unfinished outputs
    monkeypatch.setattr(training, "batch_loss", real_loss)
    resumed = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "resumed", CPU)
    assert [p["step"] for p in resumed] == list(range(1, 7))
    assert [p["loss"] for p in resumed] == pytest.approx([p["loss"] for p in straight], rel=1e-5)


def test_checkpoint_from_other_options_is_refused(corpus, tmp_path):
    utterances = read_manifest(corpus, split="train")
    resume_dir(tmp_path / "m").mkdir(parents=True)
    torch.save({"options": {"steps": 99}}, resume_dir(tmp_path / "m") / "state.pt")
    with pytest.raises(ValueError, match="other training options"):
        train(build_tiny_whisper(corpus), utterances, TrainingOptions(steps=1, learning_rate=1e-3), tmp_path / "m", CPU)


def test_batches_are_a_function_of_the_step():
    assert batch_indices(10, 4, step=3, seed=0) == batch_indices(10, 4, step=3, seed=0)
    epoch = batch_indices(10, 5, 0, 0) + batch_indices(10, 5, 1, 0)
    assert sorted(epoch) == list(range(10))


def test_warmup_then_linear_decay():
    options = TrainingOptions(steps=10, learning_rate=1.0, warmup_steps=2)
    factors = [learning_rate_factor(s, options) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] == pytest.approx(1 / 8)


def test_gpu_precision_trains_in_float32_on_cpu(corpus, tmp_path):
    options = TrainingOptions(steps=1, learning_rate=1e-3, batch_size=4, precision="bf16")
    curve = train(build_tiny_whisper(corpus), read_manifest(corpus, split="train"), options, tmp_path / "m", CPU)
    assert torch.isfinite(torch.tensor(curve[0]["loss"]))
    assert load_whisper(tmp_path / "m").model.dtype == torch.float32
