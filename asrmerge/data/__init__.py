"""Offline synthetic speech corpus: text grammars, espeak-ng synthesis, channel effects, manifests.

Public entry points: `build_set` (corpus), `default_sets` (worlds, the demo world as data), `read_manifest` / `write_manifest` /
`validate_manifest` / `load_audio` / `Utterance` (manifest format). The synthesiser is in
`asrmerge.data.espeak`, effects in `asrmerge.data.channel`, sentence generators in `asrmerge.data.text`.
"""

import importlib
from typing import Any

# Resolved on first use (PEP 562), so that importing a submodule, e.g. for the `asrmerge` command line, does not load
# the audio stack (scipy, soundfile) of the corpus builder.
_SOURCES = {
    "build_set": "corpus", "build_sets": "corpus", "default_sets": "worlds", "parse_spec": "corpus",
    "SPLITS": "manifest", "Utterance": "manifest", "load_audio": "manifest", "read_manifest": "manifest",
    "validate_manifest": "manifest", "write_manifest": "manifest",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)


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
