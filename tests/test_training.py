"""Fine-tuning: the loss falls, runs are reproducible, a killed run resumes where it stopped."""
import copy
import dataclasses
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from asrmerge.data.manifest import read_manifest
from asrmerge.models.whisper import load_whisper
from asrmerge.training.loop import (
    FeatureCache, TrainingOptions, batch_indices, ctc_loss, fit_ctc_head, learning_rate_factor, new_ctc_head, resume_dir,
    train,
)
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


def test_a_ctc_head_fitted_on_encoder_states_computed_once_equals_one_fitted_on_states_recomputed_each_step(corpus):
    """fit_ctc_head encodes each utterance once (the encoder is frozen); the head is bit for bit the one trained by
    the plain loop that runs the encoder on every batch."""
    utterances = read_manifest(corpus, split="train")
    whisper = build_tiny_whisper(corpus, seed=3)
    options = TrainingOptions(steps=1, learning_rate=1e-3, batch_size=3, ctc_weight=0.3)
    steps = 2 * len(utterances) // options.batch_size  # every utterance is drawn again, in other batches
    fitted = fit_ctc_head(whisper, utterances, options, steps, 1e-2, CPU)
    torch.manual_seed(options.seed)
    head = new_ctc_head(whisper, CPU)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    cache = FeatureCache(whisper)
    for step in range(steps):
        batch = [utterances[i] for i in batch_indices(len(utterances), options.batch_size, step, options.seed + 2)]
        with torch.no_grad():
            states = whisper.model.model.encoder(cache(batch, CPU)).last_hidden_state
        loss = ctc_loss(whisper, head, states, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert all(torch.equal(fitted[name], tensor) for name, tensor in head.state_dict().items())


def test_same_seed_same_weights(corpus, tmp_path):
    options = TrainingOptions(steps=3, learning_rate=1e-3, batch_size=4, seed=5)
    utterances = read_manifest(corpus, split="train")
    a = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "a", CPU)
    b = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "b", CPU)
    assert a == b
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_a_killed_run_resumes_bit_for_bit(corpus, tmp_path, monkeypatch):
    utterances = read_manifest(corpus, split="train")
    options = TrainingOptions(steps=6, learning_rate=1e-3, batch_size=4, checkpoint_every=3, seed=1)
    straight = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "straight", CPU)
    _kill_after_first_checkpoint(build_tiny_whisper(corpus), utterances, options, tmp_path / "resumed", monkeypatch)
    shutil.rmtree(tmp_path / "resumed", ignore_errors=True)  # as a workflow manager does with unfinished outputs
    resumed = train(build_tiny_whisper(corpus), utterances, options, tmp_path / "resumed", CPU)
    assert [p["step"] for p in resumed] == list(range(1, 7))
    assert resumed == straight  # bit for bit: losses, learning rates
    for name in ("model.safetensors", "loss.csv"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def _kill_after_first_checkpoint(whisper, utterances, options, out_dir, monkeypatch):
    """Train until the first checkpoint is written, then die inside the next step (as a killed job does)."""
    import asrmerge.training.loop as training

    real_loss, calls = training.batch_loss, {"n": 0}

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > options.checkpoint_every:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "batch_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train(whisper, utterances, options, out_dir, CPU)
    monkeypatch.setattr(training, "batch_loss", real_loss)
    assert (resume_dir(out_dir) / "state.pt").is_file()


@pytest.mark.parametrize("change", ["options", "base", "data"])
def test_resume_state_of_other_inputs_is_discarded(corpus, tmp_path, monkeypatch, change):
    """A state left by a run on other options, starting weights or data never resumes this run."""
    utterances = read_manifest(corpus, split="train")
    options = TrainingOptions(steps=4, learning_rate=1e-3, batch_size=4, checkpoint_every=2, seed=1)
    _kill_after_first_checkpoint(build_tiny_whisper(corpus), utterances, options, tmp_path / "m", monkeypatch)
    whisper, now = build_tiny_whisper(corpus), list(utterances)
    if change == "options":
        options = TrainingOptions(steps=4, learning_rate=2e-3, batch_size=4, checkpoint_every=2, seed=1)
    elif change == "base":
        torch.nn.init.normal_(whisper.model.model.encoder.layer_norm.weight)
    else:
        audio = tmp_path / "changed.wav"
        audio.write_bytes(bytearray(Path(now[0].audio).read_bytes())[:-2] + b"\x01\x00")  # one sample differs
        now[0] = dataclasses.replace(now[0], audio=audio)
    straight = train(copy.deepcopy(whisper), now, options, tmp_path / "straight", CPU)
    rerun = train(whisper, now, options, tmp_path / "m", CPU)
    assert rerun == straight  # from step 1, not from the stale checkpoint


def test_planted_pickle_in_the_resume_state_is_not_run(corpus, tmp_path):
    marker = tmp_path / "pwned"
    resume_dir(tmp_path / "m").mkdir(parents=True)
    with open(resume_dir(tmp_path / "m") / "state.pt", "wb") as f:
        pickle.dump(_Planted(str(marker)), f)
    utterances = read_manifest(corpus, split="train")
    curve = train(build_tiny_whisper(corpus), utterances, TrainingOptions(steps=1, learning_rate=1e-3), tmp_path / "m", CPU)
    assert not marker.exists() and [p["step"] for p in curve] == [1]


class _Planted:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


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


def test_recording_longer_than_the_window_is_an_error_naming_it(corpus, tmp_path):
    import soundfile

    whisper = build_tiny_whisper(corpus)
    utterances = read_manifest(corpus, split="train")[:4]
    sr, window = whisper.feature_extractor.sampling_rate, whisper.feature_extractor.n_samples
    long_audio = tmp_path / "long.wav"
    soundfile.write(long_audio, torch.zeros(window + sr).numpy(), sr)
    utterances[2] = dataclasses.replace(utterances[2], audio=long_audio)
    with pytest.raises(ValueError, match=rf"utterance {utterances[2].id} .* longer than the model's"):
        train(whisper, utterances, TrainingOptions(steps=1, learning_rate=1e-3, batch_size=4), tmp_path / "m", CPU)


def test_a_hold_file_keeps_a_run_before_its_first_step_until_it_is_removed(tmp_path, monkeypatch):
    """The fault-injection hook of the SLURM test: only the run whose output folder is named in the hold folder waits."""
    import threading

    from asrmerge.training.loop import HOLD_ENV, hold_before_training

    monkeypatch.setenv(HOLD_ENV, str(tmp_path))
    (tmp_path / "news.hold").touch()
    hold_before_training(tmp_path / "models" / "finetuned" / "weather")  # no hold file of its own: returns at once
    held = threading.Thread(target=hold_before_training, args=(tmp_path / "models" / "finetuned" / "news",))
    held.start()
    held.join(timeout=1.0)
    assert held.is_alive()
    (tmp_path / "news.hold").unlink()
    held.join(timeout=5.0)
    assert not held.is_alive()


def test_lora_fine_tune_changes_only_its_targets_by_its_adapters(corpus, tmp_path):
    """mode lora: the saved model is a plain Whisper whose targeted weights moved by exactly alpha/rank · B A (the
    adapters saved beside it), every other tensor byte-identical to the start; a run resumes like a full one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from asrmerge.training.loop import LORA_ADAPTER_FILE

    whisper = build_tiny_whisper(corpus)
    start = {n: t.detach().clone() for n, t in whisper.model.state_dict().items()}
    options = TrainingOptions(steps=3, learning_rate=5e-3, batch_size=4, mode="lora", lora_rank=2, lora_alpha=4.0,
                              lora_targets=("q_proj", "fc1"))
    train(whisper, read_manifest(corpus, split="train"), options, tmp_path / "lora", CPU)
    saved = load_file(str(tmp_path / "lora" / "model.safetensors"))
    adapters = load_file(str(tmp_path / "lora" / LORA_ADAPTER_FILE))
    assert not any("lora_" in n for n in saved)
    changed = {n for n, t in saved.items() if not torch.equal(t, start[n])}
    assert changed and all(n.endswith(("q_proj.weight", "fc1.weight")) for n in changed), changed
    for name in changed:
        module = name.removesuffix(".weight")
        a, b = adapters[f"{module}.lora_A.default.weight"], adapters[f"{module}.lora_B.default.weight"]
        torch.testing.assert_close(saved[name] - start[name], (4.0 / 2) * b @ a, rtol=1e-4, atol=1e-6)
    with safe_open(str(tmp_path / "lora" / LORA_ADAPTER_FILE), "pt") as handle:
        assert handle.metadata()["rank"] == "2"
    assert load_whisper(tmp_path / "lora").model.config.model_type == "whisper"


def test_lora_targets_that_match_nothing_are_named(corpus, tmp_path):
    options = TrainingOptions(steps=1, learning_rate=1e-3, batch_size=4, mode="lora", lora_targets=("nothing_here",))
    with pytest.raises(ValueError, match="lora_targets"):
        train(build_tiny_whisper(corpus), read_manifest(corpus, split="train"), options, tmp_path / "x", CPU)
    with pytest.raises(ValueError, match="training mode"):
        TrainingOptions(steps=1, learning_rate=1e-3, mode="adapter")
