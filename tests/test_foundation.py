"""Pretraining the demo's foundation in stages: a later stage continues an earlier stage's model and tokenizer."""
import copy

import pytest
import torch
from safetensors.torch import load_file, save

from asrmerge.data.manifest import read_manifest
from asrmerge.training.foundation import prepare_base_model
from asrmerge.models.whisper import LoadedWhisper, build_small_whisper, feature_extractor_for, load_whisper, train_tokenizer
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


def test_a_stage_continues_the_ctc_head_saved_beside_the_earlier_model(corpus, tmp_path, caplog):
    """The CTC head is saved with a model trained with it and continued by the next stage; a stage whose folder
    lacks it first fits a new head on the frozen encoder (the model's weights do not move during that fit)."""
    from asrmerge.training.foundation import CTC_HEAD_FILE, continued_ctc_head
    from asrmerge.training.loop import TrainingOptions

    utterances = read_manifest(corpus, split="train")
    pretrain = {"steps": 2, "learning_rate": 1e-3, "batch_size": 4, "ctc_weight": 0.3}
    build_tiny_whisper(corpus, seed=3).save(tmp_path / "stage0")
    settings = {"source": "pretrain", "audio_seconds": 6, "pretrain": pretrain}
    prepare_base_model({**settings, "init": str(tmp_path / "stage0")}, utterances, tmp_path / "stage1", CPU, seed=0)
    assert "holds no CTC head" in caplog.text
    head1 = load_file(tmp_path / "stage1" / CTC_HEAD_FILE)
    stage1 = load_whisper(tmp_path / "stage1")
    assert head1["weight"].shape == (stage1.model.config.vocab_size + 1, stage1.model.config.d_model)
    options = TrainingOptions(**pretrain)
    assert continued_ctc_head(tmp_path / "stage1", stage1, utterances, options, CPU).keys() == head1.keys()
    assert all(torch.equal(continued_ctc_head(tmp_path / "stage1", stage1, utterances, options, CPU)[k], head1[k])
               for k in head1)
    caplog.clear()
    prepare_base_model({**settings, "init": str(tmp_path / "stage1")}, utterances, tmp_path / "stage2", CPU, seed=0)
    assert "holds no CTC head" not in caplog.text
    head2 = load_file(tmp_path / "stage2" / CTC_HEAD_FILE)
    change = max(float((head2[k] - head1[k]).abs().max()) for k in head1)
    assert 0 < change < 0.01  # the stage-1 head, trained on for two steps


def test_a_stage_with_another_window_is_refused(corpus, tmp_path):
    build_tiny_whisper(corpus).save(tmp_path / "stage1")
    settings = {"source": "pretrain", "init": str(tmp_path / "stage1"), "audio_seconds": 10,
                "architecture": ARCHITECTURE, "pretrain": {"steps": 1, "learning_rate": 1e-4}}
    with pytest.raises(ValueError, match="reads 6 s windows, base_model.audio_seconds is 10"):
        prepare_base_model(settings, read_manifest(corpus, split="train"), tmp_path / "stage2", CPU, seed=0)


def test_a_longer_window_fine_tune_is_cut_to_the_base_window(corpus, tmp_path):
    """A user's fine-tune that reads 10 s (like a released 30 s Whisper next to a shortened base) is sliced as the
    base was; its other weights are kept exactly."""
    from asrmerge.training.foundation import adopt_finetune

    short = build_tiny_whisper(corpus)
    short.save(tmp_path / "base")
    texts = [u.text for u in read_manifest(corpus)]
    tokenizer = train_tokenizer(texts * 4, ["pt", "en"], vocab_size=300)
    long = LoadedWhisper(build_small_whisper(tokenizer, ARCHITECTURE, audio_seconds=10, seed=1),
                         feature_extractor_for(80, 10), tokenizer)
    long.save(tmp_path / "long")
    adopted = adopt_finetune(tmp_path / "long", tmp_path / "base")
    assert adopted.model.config.max_source_positions == short.model.config.max_source_positions == 300
    positions = adopted.model.model.encoder.embed_positions.weight
    assert torch.equal(positions, long.model.model.encoder.embed_positions.weight[:300])
    assert adopted.feature_extractor.n_samples == short.feature_extractor.n_samples


def test_a_fine_tune_of_another_shape_or_with_a_missing_tensor_is_refused(corpus, tmp_path):
    from asrmerge.training.foundation import adopt_finetune
    from asrmerge.merging.checkpoint import save_tensors

    build_tiny_whisper(corpus).save(tmp_path / "base")
    other = build_tiny_whisper(corpus)
    other.model.model.decoder.layers.append(copy.deepcopy(other.model.model.decoder.layers[0]))
    other.model.config.decoder_layers = 2
    other.save(tmp_path / "deeper")
    with pytest.raises(ValueError, match="fine-tune .*deeper does not fit the base model"):
        adopt_finetune(tmp_path / "deeper", tmp_path / "base")
    build_tiny_whisper(corpus).save(tmp_path / "partial")
    weights = load_file(tmp_path / "partial" / "model.safetensors")
    weights.pop("model.encoder.layers.0.fc1.weight")
    save_tensors(tmp_path / "partial" / "model.safetensors", weights, {"format": "pt"})
    with pytest.raises(ValueError, match="partial: missing keys in its weights, e.g. model.encoder.layers.0.fc1.weight"):
        load_whisper(tmp_path / "partial")


def test_ship_foundation_halves_the_weights_keeps_the_ctc_head_and_never_overwrites_silently(corpus, tmp_path, capsys):
    from asrmerge.cli import main
    from asrmerge.training.loop import CTC_HEAD_FILE

    source = tmp_path / "trained"
    trained = build_tiny_whisper(corpus, seed=1)
    vocabulary = len(trained.tokenizer)
    head = {"weight": torch.randn(vocabulary + 1, trained.model.config.d_model), "bias": torch.randn(vocabulary + 1)}
    trained.save(source, extra_files={CTC_HEAD_FILE: save(head)})
    out = tmp_path / "shipped"
    assert main(["ship-foundation", str(source), str(out)]) == 0
    weights = load_file(out / "model.safetensors")
    original = load_file(source / "model.safetensors")
    assert all(weights[name].dtype == torch.float16 for name in weights)
    # The vocabulary renumbered in Whisper's order (special tokens last): the same rows under new ids.
    shipped = load_whisper(out)
    assert shipped.tokenizer.convert_ids_to_tokens(vocabulary - 1) == "<|notimestamps|>"
    assert shipped.model.generation_config.no_timestamps_token_id == vocabulary - 1
    assert shipped.model.generation_config.task == "transcribe" and "<|pt|>" in shipped.model.generation_config.lang_to_id
    embedding = "model.decoder.embed_tokens.weight"
    for token, old in trained.tokenizer.get_vocab().items():
        new = shipped.tokenizer.convert_tokens_to_ids(token)
        assert torch.equal(weights[embedding][new], original[embedding][old].half()), token
        assert torch.equal(load_file(out / CTC_HEAD_FILE)["weight"][new], head["weight"][old]), token
    assert torch.equal(load_file(out / CTC_HEAD_FILE)["weight"][-1], head["weight"][-1])  # the blank stays last
    assert all(torch.equal(weights[name], original[name].half()) for name in original if name != embedding)
    sentence = "o tempo amanhã"
    assert shipped.tokenizer.decode(shipped.tokenizer.encode(sentence, add_special_tokens=False)) == sentence
    assert main(["ship-foundation", str(source), str(out)]) == 2
    assert "holds an earlier output; pass --overwrite" in capsys.readouterr().err
    assert main(["ship-foundation", str(source), str(source), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["ship-foundation", str(source), str(out), "--overwrite"]) == 0


def test_a_shipped_foundation_transcribes_in_the_asr_pipeline_as_the_project_does(corpus, tmp_path):
    """A plain `pipeline("automatic-speech-recognition", model=folder)`, no arguments: the same words as the project's
    decoder (greedy, Portuguese) on the same audio."""
    from transformers import pipeline

    from asrmerge.cli import main
    from asrmerge.data.manifest import load_audio
    from asrmerge.evaluation.decoding import DecodingOptions, transcribe

    build_tiny_whisper(corpus, seed=2).save(tmp_path / "trained")
    assert main(["ship-foundation", str(tmp_path / "trained"), str(tmp_path / "shipped")]) == 0
    utterances = read_manifest(corpus, split="test")[:2]
    shipped = load_whisper(tmp_path / "shipped")
    # the same token cap on both sides: the model's target space after the prompt, in the generation config
    assert shipped.model.generation_config.max_new_tokens == shipped.model.config.max_target_positions - 4
    ours = transcribe(shipped, utterances, DecodingOptions(), torch.device("cpu"), progress=False)
    assert all(len(row["hypothesis"]) > 10 for row in ours)  # something to compare (an untrained model babbles)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "shipped"))
    for utterance, row in zip(utterances, ours):
        assert asr(load_audio(utterance.audio, 16000))["text"].strip() == row["hypothesis"]


def test_a_copied_base_carries_how_the_run_evaluates_in_its_generation_config(tmp_path):
    """A released model copied as a run's base gets the run's language and beam size in its generation config, so
    the ASR pipeline on any folder the run writes (fine-tunes and exports copy it) decodes as the run did."""
    from asrmerge.workflow.experiment import Experiment

    experiment = Experiment.load("config.yaml")
    settings = {**experiment.config["base_model"], "path": "assets/foundation"}
    for num_beams in (1, 4):
        generation = {**experiment.generation, "num_beams": num_beams}
        prepare_base_model(settings, [], tmp_path / str(num_beams), CPU, seed=0, generation=generation)
        config = load_whisper(tmp_path / str(num_beams)).model.generation_config
        assert (config.language, config.task, config.num_beams) == ("pt", "transcribe", num_beams)
