"""Offline synthetic speech corpus: text grammars, espeak-ng synthesis, channel effects, manifests.

Public entry points: `build_set` / `default_sets` (corpus), `read_manifest` / `write_manifest` /
`validate_manifest` / `load_audio` / `Utterance` (manifest format). The synthesiser is in
`asrmerge.data.espeak`, effects in `asrmerge.data.channel`, sentence generators in `asrmerge.data.text`.
"""

from asrmerge.data.corpus import build_set, build_sets, default_sets, parse_spec
from asrmerge.data.manifest import SPLITS, Utterance, load_audio, read_manifest, validate_manifest, write_manifest

__all__ = [
    "SPLITS",
    "Utterance",
    "build_set",
    "build_sets",
    "default_sets",
    "load_audio",
    "parse_spec",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
]
