"""Long-form test sets: the test utterances of another set joined into recordings of a minute or more.

A *recordings spec* (an entry of the workflow config's corpus section)::

    banking_long:
      role: long_form
      recordings_of: banking          # a set of the same config with a test split
      recording_seconds: [60, 90]     # target length of each recording, drawn uniformly
      pause_seconds: [0.4, 1.2]       # pause between two utterances, drawn uniformly

Each recording holds consecutive test utterances of the source set (same voices, channel and sentences), separated
by pauses of a faint noise floor (no digital silence); its transcript is theirs joined, and its manifest row keeps
the source set (`recordings_of`), its utterance ids (`source`) and each one's start and end time (`segments`, s). The last recording takes the leftovers when
they would be shorter than the lower bound. The same sentences are then scored short-form (the source set) and
long-form (this set). Deterministic in (seed, set name, spec, source manifest).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asrmerge.layout import MANIFEST_NAME
from asrmerge.data.manifest import Utterance, load_audio, read_manifest, write_manifest, write_wav
from asrmerge.defaults import default

SPEC_KEYS = ("role", "recordings_of", "recording_seconds", "pause_seconds", "description")
DEFAULT_PAUSE_SECONDS = (0.4, 1.2)
#: Level of the pauses' noise floor relative to full scale (-60 dBFS).
PAUSE_LEVEL = 1e-3


def is_recordings_spec(spec: Mapping[str, Any]) -> bool:
    return isinstance(spec, Mapping) and "recordings_of" in spec


def _range(name: str, spec: Mapping[str, Any], key: str, default: Sequence[float] | None, low: float) -> tuple[float, float]:
    value = spec.get(key, default)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not low <= value[0] <= value[1]):
        raise ValueError(f"corpus set {name!r}, key {key!r}: expected [low, high] with {low:g} <= low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def parse_recordings_spec(name: str, spec: Mapping[str, Any], sets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Check a recordings spec against the config's other sets; ValueError naming the set and key."""
    unknown = [key for key in spec if key not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"corpus set {name!r}: unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    if spec.get("role") != "long_form":
        raise ValueError(f"corpus set {name!r}: a set made of recordings has role long_form, got {spec.get('role')!r}")
    source = spec["recordings_of"]
    if source not in sets or is_recordings_spec(sets[source]):
        raise ValueError(f"corpus set {name!r}, key 'recordings_of': {source!r} is not a set of this config")
    if isinstance(sets[source].get("language"), list):
        raise ValueError(f"corpus set {name!r}, key 'recordings_of': {source!r} mixes languages; a recording has one")
    return {
        "source": source,
        "recording_seconds": _range(name, spec, "recording_seconds", None, 1.0),
        "pause_seconds": _range(name, spec, "pause_seconds", DEFAULT_PAUSE_SECONDS, 0.0),
    }


def _group(durations: Sequence[float], targets: np.ndarray, low: float) -> list[list[int]]:
    """Consecutive utterance indices per recording: each grows until it reaches its drawn target length."""
    groups: list[list[int]] = [[]]
    length = 0.0
    for index, duration in enumerate(durations):
        groups[-1].append(index)
        length += duration
        if length >= targets[len(groups) - 1]:
            groups.append([])
            length = 0.0
    leftovers = groups.pop()
    if leftovers and groups and sum(durations[i] for i in leftovers) < low:
        groups[-1].extend(leftovers)
    elif leftovers:
        groups.append(leftovers)
    return groups


def build_recordings(name: str, spec: Mapping[str, Any], source_manifest: str | Path, out_dir: str | Path, *,
                     seed: int, sample_rate: int = default("corpus.sample_rate")) -> Path:
    """Write the long-form set `name` (audio and manifest) from the test split of `source_manifest`."""
    low, high = spec["recording_seconds"]
    pause_low, pause_high = spec["pause_seconds"]
    utterances = read_manifest(source_manifest, split="test")
    if not utterances:
        raise ValueError(f"corpus set {name!r}: {source_manifest} has no test utterances to join")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    targets = rng.uniform(low, high, size=len(utterances))
    out_dir = Path(out_dir)
    (out_dir / "audio" / "test").mkdir(parents=True, exist_ok=True)
    rows: list[Utterance] = []
    for number, group in enumerate(_group([u.duration for u in utterances], targets, low)):
        pieces, segments, clock = [], [], 0.0
        for position, index in enumerate(group):
            if position:
                pause = int(round(rng.uniform(pause_low, pause_high) * sample_rate))
                pieces.append((PAUSE_LEVEL * rng.standard_normal(pause)).astype(np.float32))
                clock += pause / sample_rate
            audio = load_audio(utterances[index].audio, sample_rate)
            pieces.append(audio)
            segments.append([round(clock, 4), round(clock + audio.size / sample_rate, 4)])
            clock += audio.size / sample_rate
        audio = np.concatenate(pieces)
        path = out_dir / "audio" / "test" / f"{name}-test-{number:05d}.wav"
        write_wav(path, audio, sample_rate)
        members = [utterances[i] for i in group]
        rows.append(Utterance(
            id=f"{name}-test-{number:05d}", audio=path.resolve(), text=" ".join(u.text for u in members),
            duration=round(audio.size / sample_rate, 4), set=name, split="test", language=members[0].language,
            variant=members[0].variant,
            extra={"recordings_of": spec["source"], "source": [u.id for u in members], "segments": segments},
        ))
    return write_manifest(out_dir / MANIFEST_NAME, rows)

