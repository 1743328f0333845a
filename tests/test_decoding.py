"""Decoding is deterministic, the cached greedy search equals a full recomputation, beam 1 equals greedy;
lambda selection reads validation audio only."""
import pytest
import torch
from safetensors.torch import save_file

import asrmerge.evaluation.decoding as decoding
from asrmerge.data.manifest import read_manifest
from asrmerge.evaluation.decoding import DecodingOptions, beam_decode, greedy_decode, transcribe
from asrmerge.models.whisper import complete_generation_config, load_whisper, log_mel, suppressed_token_ids
from asrmerge.data.manifest import load_audio
from asrmerge.evaluation.selection import choose_lambda, select_lambda
from speech_world import build_tiny_corpus, build_tiny_whisper

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    manifest = build_tiny_corpus(root / "weather")
    whisper = build_tiny_whisper(manifest, seed=3)
    with torch.no_grad():  # a random model that does not stop at once, so decoding has something to do
        whisper.model.proj_out.weight.add_(torch.randn_like(whisper.model.proj_out.weight))
    whisper.save(root / "model")
    return manifest, whisper, root


def test_transcribe_is_deterministic_and_keeps_order(world):
    manifest, whisper, _ = world
    utterances = read_manifest(manifest, split="test")
    options = DecodingOptions(batch_size=3, max_new_tokens=8)
    first = transcribe(whisper, utterances, options, CPU, progress=False)
    assert first == transcribe(whisper, utterances, options, CPU, progress=False)
    assert [r["id"] for r in first] == [u.id for u in utterances]
    assert [r["reference"] for r in first] == [u.text for u in utterances]


def test_cached_greedy_equals_full_recomputation(world):
    manifest, whisper, _ = world
    utterances = read_manifest(manifest, split="test")[:2]
    features = log_mel(whisper, [load_audio(u.audio) for u in utterances], CPU)
    prompt = whisper.prompt_ids("pt")
    cached = greedy_decode(whisper, features, prompt, 6)
    ids = torch.tensor([prompt] * 2)
    suppressed = suppressed_token_ids(whisper)
    with torch.no_grad():
        for _ in range(6):
            logits = whisper.model(input_features=features, decoder_input_ids=ids).logits[:, -1]
            logits[:, suppressed] = -torch.inf
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    full = [[t for t in row[len(prompt):]] for row in ids.tolist()]
    for row_cached, row_full in zip(cached, full):
        stop = row_full.index(whisper.eot_id) if whisper.eot_id in row_full else len(row_full)
        assert row_cached == row_full[:stop]


def test_greedy_rows_that_end_leave_the_batch_without_changing_the_others(world):
    """The demo's foundation on real speech: transcripts end at different steps, so finished rows leave the batch
    mid-search; every transcript equals the step-by-step recomputation of transformers' decoder without a cache."""
    manifest, _, _ = world
    foundation = load_whisper("assets/foundation")
    utterances = read_manifest(manifest)[:8]
    features = log_mel(foundation, [load_audio(u.audio) for u in utterances], CPU)
    prompt = foundation.prompt_ids("pt")
    decoded = greedy_decode(foundation, features, prompt, 80)
    assert len({len(ids) for ids in decoded}) > 2 and max(len(ids) for ids in decoded) < 80  # rows ended apart
    ids = torch.tensor([prompt] * len(utterances))
    suppressed, eot = suppressed_token_ids(foundation), foundation.eot_id
    with torch.no_grad():
        states = foundation.model.model.encoder(features).last_hidden_state
        for _ in range(max(len(row) for row in decoded) + 1):
            logits = foundation.model(encoder_outputs=(states,), decoder_input_ids=ids).logits[:, -1]
            logits[:, suppressed] = -torch.inf
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    recomputed = [row[len(prompt):] for row in ids.tolist()]
    assert decoded == [row[: row.index(eot)] for row in recomputed]


def test_beam_search_transcribes_as_transformers_generate(world):
    """Beam search (prompt through transformers' decoder, later tokens through asrmerge's step, beams reordered)
    gives generate(num_beams=K)'s transcripts on real speech."""
    manifest, _, _ = world
    foundation = load_whisper("assets/foundation")
    features = log_mel(foundation, [load_audio(u.audio) for u in read_manifest(manifest)[:8]], CPU)
    ours = beam_decode(foundation, features, foundation.prompt_ids("pt"), 100, num_beams=4)
    complete_generation_config(foundation, "pt", num_beams=4, max_new_tokens=100)
    with torch.no_grad():
        generated = foundation.model.generate(features, language="pt", task="transcribe", num_beams=4,
                                              max_new_tokens=100, attention_mask=torch.ones(features.shape[:2]))
    decode = foundation.tokenizer.batch_decode
    texts = [[t.strip() for t in decode(ids, skip_special_tokens=True)] for ids in (ours, generated)]
    assert texts[0] == texts[1] and len(set(texts[0])) > 4


def test_beam_of_one_is_greedy_and_beams_score_no_worse(world):
    manifest, whisper, _ = world
    utterances = read_manifest(manifest, split="test")
    features = log_mel(whisper, [load_audio(u.audio) for u in utterances], CPU)
    prompt = whisper.prompt_ids("pt")
    greedy = greedy_decode(whisper, features, prompt, 8)
    assert beam_decode(whisper, features, prompt, 8, num_beams=1) == greedy
    assert len(beam_decode(whisper, features, prompt, 8, num_beams=3)) == len(utterances)


def test_selection_never_opens_test_audio(world, tmp_path, monkeypatch):
    manifest, whisper, root = world
    tau = {name: 0.01 * torch.randn_like(t) for name, t in whisper.model.state_dict().items()
           if name != "proj_out.weight"}
    save_file({k: v.contiguous() for k, v in tau.items()}, str(tmp_path / "tau.safetensors"))
    opened = []
    monkeypatch.setattr(decoding, "load_audio", lambda path, sr=16000: opened.append(str(path)) or load_audio(path, sr))
    result = select_lambda(root / "model", tmp_path / "tau.safetensors", [manifest], [0.0, 0.5],
                           DecodingOptions(batch_size=4, max_new_tokens=4), CPU)
    validation = {str(u.audio) for u in read_manifest(manifest, split="validation")}
    assert opened and set(opened) <= validation
    assert result["validation_utterances"] == len(validation)
    assert result["chosen_lambda"] in (0.0, 0.5)


def test_choose_lambda_breaks_ties_as_asked():
    curve = [{"lambda": 0.2, "wer": 0.3}, {"lambda": 0.4, "wer": 0.2}, {"lambda": 0.6, "wer": 0.2}]
    assert choose_lambda(curve) == 0.4
    assert choose_lambda(curve, tie_break="largest") == 0.6
