"""Long recordings are never cut: refused by default, decoded in voice-activity chunks (`long_form: vad`) or in
consecutive windows (`long_form: sequential`)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asrmerge.data.espeak import EspeakSynthesizer
from asrmerge.data.manifest import Utterance
from asrmerge.evaluation.decoding import DecodingOptions, transcribe
from asrmerge.models.whisper import log_mel
from asrmerge.evaluation.longform import merge_segments, vad_pieces
from asrmerge.models.whisper import load_whisper

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
SENTENCES = [
    "o tempo amanhã vai estar nublado com aguaceiros fracos", "a reunião foi adiada para a próxima semana",
    "quero saber o saldo da minha conta", "o comboio para o porto parte às nove horas",
    "a equipa da casa marcou dois golos na segunda parte", "o médico receitou um antibiótico durante sete dias",
]


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Utterance:
    """About 90 s: the sentences spoken twice over, each followed by 0.6–1.6 s of silence."""
    synthesizer = EspeakSynthesizer(SR)
    rng = np.random.default_rng(0)
    parts, words = [], []
    for _ in range(6):
        for sentence in SENTENCES:
            parts.append(synthesizer.synthesize(sentence, voice="pt", rate=150, pitch=50))
            parts.append(np.zeros(int(rng.uniform(0.6, 1.6) * SR), dtype=np.float32))
            words.append(sentence)
    audio = np.concatenate(parts)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, audio, SR, subtype="PCM_16")
    return Utterance(id="long-0", audio=path, text=" ".join(words), duration=audio.size / SR, set="long",
                     split="test", language="pt")


def test_chunks_follow_whisperx_merging():
    assert merge_segments([(0, 10), (12, 20), (25, 40), (41, 45)], max_samples=20) == [(0, 20), (25, 45)]
    assert merge_segments([(0, 50)], max_samples=20) == [(0, 20)]  # the VAD splits first; never longer than allowed


def test_reject_is_the_default_and_names_the_recording(long_recording):
    whisper = load_whisper(ROOT / "assets" / "foundation")
    assert long_recording.duration > 80
    with pytest.raises(ValueError, match=r"recording long-0 .* lasts \d+\.\d s, longer than the model's 6 s window"):
        transcribe(whisper, [long_recording], DecodingOptions(), torch.device("cpu"), progress=False)
    with pytest.raises(ValueError, match="longer than the model's 6 s window"):
        log_mel(whisper, [np.zeros(7 * SR, dtype=np.float32)], torch.device("cpu"))  # no code path cuts


def test_vad_chunks_cover_the_speech_within_the_window(long_recording):
    audio, _ = sf.read(long_recording.audio, dtype="float32")
    pieces = vad_pieces(0, audio, 6 * SR)
    assert all(0 < p.end - p.start <= 6 * SR for p in pieces)
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:]))  # in time order, no overlap
    covered = sum(p.end - p.start for p in pieces)
    assert covered > 0.6 * audio.size  # speech is about 70 % of the recording; chunks hold it and the pauses within


def test_vad_mode_decodes_the_whole_recording(long_recording):
    whisper = load_whisper(ROOT / "assets" / "foundation")
    options = DecodingOptions(batch_size=8, max_new_tokens=150, long_form="vad")
    row, = transcribe(whisper, [long_recording], options, torch.device("cpu"), progress=False)
    reference, hypothesis = row["reference"].split(), row["hypothesis"].split()
    # A transcript cut at the window would hold ~7 % of the words; chunked decoding keeps the count near the reference.
    assert 0.6 * len(reference) < len(hypothesis) < 1.4 * len(reference)


def test_the_corpus_job_reports_long_recordings_and_refuses_what_would_be_cut(tmp_path):
    from asrmerge.evaluation.longform import length_report

    def row(index: int, split: str, seconds: float) -> Utterance:
        return Utterance(id=f"u{index}", audio=tmp_path / f"u{index}.wav", text="bom dia", duration=seconds, set="mine",
                         split=split, language="pt")

    short = [row(0, "train", 4.0), row(1, "test", 5.0)]
    assert length_report(short, 6, "reject") == []
    long_test = short + [row(2, "test", 70.0), row(3, "test", 95.5)]
    (line,) = length_report(long_test, 6, "vad")
    assert line.startswith("2 of 3 test recordings are longer than the model's 6 s window (longest u3, 95.5 s")
    assert line.endswith("evaluation.long_form vad decodes them")
    with pytest.raises(ValueError, match="set evaluation.long_form: vad"):
        length_report(long_test, 6, "reject")
    with pytest.raises(ValueError, match="1 of 2 train recordings .* training never cuts audio"):
        length_report(short + [row(4, "train", 7.0)], 6, "vad")


def test_sequential_mode_decodes_consecutive_windows_over_the_whole_recording(long_recording):
    """Whisper's sequential algorithm without timestamps: windows back to back from the first sample to the last, each
    decoded whole. A cut transcript would hold ~7 % of the reference's words; this one holds about half or more: the
    demo foundation, trained on single sentences, often ends a window after its first sentence, and words on a window
    boundary are split (what VAD chunking avoids)."""
    from asrmerge.evaluation.longform import window_pieces

    samples = int(round(long_recording.duration * SR))
    pieces = window_pieces(0, samples, 6 * SR)
    assert pieces[0].start == 0 and pieces[-1].end == samples
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:])) and all(p.end - p.start <= 6 * SR for p in pieces)
    whisper = load_whisper(ROOT / "assets" / "foundation")
    options = DecodingOptions(batch_size=8, max_new_tokens=150, long_form="sequential")
    row, = transcribe(whisper, [long_recording], options, torch.device("cpu"), progress=False)
    reference, hypothesis = row["reference"].split(), row["hypothesis"].split()
    assert 0.4 * len(reference) < len(hypothesis) < 1.4 * len(reference)


def test_sequential_mode_seeks_by_timestamps_on_checkpoints_that_predict_them(long_recording, monkeypatch):
    """A checkpoint with Whisper's timestamp tokens (here the foundation in Whisper's token order, with 301 timestamp
    tokens appended, as released checkpoints have them) decodes a long recording whole through transformers'
    sequential long-form generation with timestamps: one call on every frame of the recording, its text kept."""
    from asrmerge.models.whisper import complete_generation_config, in_whisper_token_order, predicts_timestamps

    whisper = load_whisper(ROOT / "assets" / "foundation")
    assert not predicts_timestamps(whisper)
    whisper, _ = in_whisper_token_order(whisper)
    whisper.tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(301)], special_tokens=True)
    whisper.model.resize_token_embeddings(len(whisper.tokenizer))
    complete_generation_config(whisper, "pt", num_beams=1)
    assert predicts_timestamps(whisper)
    calls, generate = [], whisper.model.generate

    def recorded_generate(features, **kwargs):
        out = generate(features, **kwargs)
        calls.append((features.shape[-1], kwargs, out))
        return out

    monkeypatch.setattr(whisper.model, "generate", recorded_generate)
    options = DecodingOptions(batch_size=8, max_new_tokens=150, long_form="sequential")
    row, = transcribe(whisper, [long_recording], options, torch.device("cpu"), progress=False)
    (frames, kwargs, out), = calls
    assert frames >= int(long_recording.duration * 100) and kwargs["return_timestamps"] is True
    sequences = out if isinstance(out, torch.Tensor) else out["sequences"]
    assert row["hypothesis"] == whisper.tokenizer.decode(sequences[0], skip_special_tokens=True).strip()
    assert 0.3 * len(row["reference"].split()) < len(row["hypothesis"].split()) < 1.4 * len(row["reference"].split())
