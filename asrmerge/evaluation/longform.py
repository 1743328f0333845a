"""Recordings longer than the model's window: decoded by an explicit mode, never cut.

`evaluation.long_form` chooses the mode:

* ``reject`` (the default): a recording longer than the window stops the job before any decoding, naming it;
* ``vad``: Silero VAD (the `silero-vad` package; its weights ship in the wheel) finds the speech, the speech segments
  are merged into chunks of at most one window, as WhisperX does (a chunk runs from the start of its first segment
  to the end of its last, pauses between them included; a segment longer than the window is split by the VAD at a
  pause, or at the window when there is none), and every chunk is decoded like a short utterance, in the same batches; the
  recording's hypothesis is its chunks' hypotheses joined in time order;
* ``sequential``: Whisper's sequential long-form algorithm. On a checkpoint with timestamp tokens (released Whisper;
  `models.whisper.predicts_timestamps`) it seeks by timestamps, as transformers' `generate` runs it on long inputs
  (`decoding.timestamp_sequential_decode`): each window is decoded with timestamps and the next one starts at the end
  of its last complete segment. On a checkpoint without them (the demo's foundation) it runs as OpenAI's
  `transcribe(..., without_timestamps=True)` does: consecutive windows, each decoded whole and the next starting
  where the last ended, hypotheses joined; a word on a window boundary can then be split or lost (what VAD chunking
  and timestamp seeking avoid), which is what comparing the modes shows.

Recordings within the window are decoded whole in every mode, so a short-form set gives the same transcripts
whatever the mode.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asrmerge.data.manifest import Utterance

log = logging.getLogger(__name__)

LONG_FORM_MODES = ("reject", "vad", "sequential")
VAD_SAMPLE_RATE = 16000
#: Silence kept around each VAD segment (WhisperX pads too: a word's onset or tail is quiet).
SPEECH_PAD_MS = 100


@dataclass(frozen=True)
class Piece:
    """What one decoder input holds: samples [start, end) of recording `index` (end None: the whole recording)."""

    index: int
    start: int = 0
    end: int | None = None


def _longer_than(utterances: Sequence[Utterance], window_seconds: float) -> tuple[list[Utterance], Utterance | None]:
    """The recordings longer than the window (durations from the manifest), and the longest of them."""
    long = [u for u in utterances if u.duration > window_seconds]
    return long, max(long, key=lambda u: u.duration, default=None)


def check_lengths(utterances: Sequence[Utterance], window_seconds: float, mode: str) -> None:
    """The `reject` mode's check, before any work: every recording fits the window (durations from the manifest)."""
    if mode not in LONG_FORM_MODES:
        raise ValueError(f"unknown long-form mode {mode!r} (known: {', '.join(LONG_FORM_MODES)})")
    if mode != "reject":
        return
    long, longest = _longer_than(utterances, window_seconds)
    if longest is not None:
        raise ValueError(
            f"recording {longest.id} ({longest.audio}) lasts {longest.duration:.1f} s, longer than the model's "
            f"{window_seconds:g} s window ({len(long)} such recording(s)); set evaluation.long_form: vad (voice-activity "
            "chunks) or sequential (consecutive windows) to decode them (nothing is ever cut silently)"
        )


def length_report(utterances: Sequence[Utterance], window_seconds: float, mode: str) -> list[str]:
    """What will happen to a set's recordings longer than the window, as log lines, checked when the set is built:
    a training row longer than the window is an error (training never cuts audio), and so is a test or validation
    row in the `reject` mode (instead of failing jobs later)."""
    lines = []
    for split in ("train", "validation", "test"):
        rows = [u for u in utterances if u.split == split]
        long, longest = _longer_than(rows, window_seconds)
        if longest is None:
            continue
        summary = (f"{len(long)} of {len(rows)} {split} recordings are longer than the model's {window_seconds:g} s "
                   f"window (longest {longest.id}, {longest.duration:.1f} s, {longest.audio})")
        if split == "train":
            raise ValueError(f"{summary}: training never cuts audio; split them or leave them out of training")
        if mode == "reject":
            raise ValueError(f"{summary}: set evaluation.long_form: vad (voice-activity chunks) or sequential "
                             "(consecutive windows) to decode them")
        lines.append(f"{summary}: evaluation.long_form {mode} decodes them")
    return lines


@functools.lru_cache(maxsize=1)
def _vad_model():
    from silero_vad import load_silero_vad

    return load_silero_vad()


def speech_segments(audio: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    """Speech segments [start, end) in samples of 16 kHz `audio`, none longer than `max_seconds`."""
    import torch  # here, not at the top: the corpus jobs use this module's checks without loading torch
    from silero_vad import get_speech_timestamps

    pad = SPEECH_PAD_MS / 1000
    with torch.inference_mode():
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), _vad_model(), sampling_rate=VAD_SAMPLE_RATE,
            max_speech_duration_s=max_seconds - 2 * pad, speech_pad_ms=SPEECH_PAD_MS,
        )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def merge_segments(segments: Sequence[tuple[int, int]], max_samples: int) -> list[tuple[int, int]]:
    """WhisperX's chunking: consecutive segments share a chunk while it spans at most `max_samples`."""
    chunks: list[tuple[int, int]] = []
    for start, end in segments:
        if chunks and end - chunks[-1][0] <= max_samples:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, min(end, start + max_samples)))
    return chunks


def vad_pieces(index: int, audio: np.ndarray, window_samples: int) -> list[Piece]:
    """The chunks of one long recording (16 kHz) as decoder inputs; a recording without detected speech gives none."""
    segments = speech_segments(audio, window_samples / VAD_SAMPLE_RATE)
    chunks = merge_segments(segments, window_samples)
    log.debug("recording %d: %d speech segment(s) in %d chunk(s)", index, len(segments), len(chunks))
    return [Piece(index, start, end) for start, end in chunks]


def window_pieces(index: int, num_samples: int, window_samples: int) -> list[Piece]:
    """The `sequential` mode's decoder inputs for one long recording: consecutive windows covering all of it."""
    return [Piece(index, start, min(start + window_samples, num_samples))
            for start in range(0, num_samples, window_samples)]
