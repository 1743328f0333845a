"""The text normalisation of scoring: transcripts as the error counts see them (`normalizer_for`).

Normalisation follows Whisper's evaluation: `EnglishTextNormalizer` for English, `BasicTextNormalizer` with
diacritics kept for every other language (both from transformers). The English normaliser's British-to-American
spelling table (`normalizer.json` of the Whisper checkpoints) is not shipped inside the transformers package; it
lives only with hub checkpoints, so by default the English normaliser runs with an empty spelling table
(e.g. "colour" and "color" stay different words). Callers that have the table (a Whisper checkpoint folder
holding `normalizer.json`) can pass it to `english_normalizer`.

It sits with the data because the manifest checks read references as scoring will (asrmerge.data.content).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

Normalizer = Callable[[str], str]


def _collapse_whitespace(normalise: Normalizer) -> Normalizer:
    """Wrap a normaliser so that its output has single spaces and no leading/trailing space.

    Whisper's normalisers replace punctuation by spaces and may leave a trailing space ("rápida!" → "rápida "),
    which would otherwise count as a character in the CER.
    """

    def wrapped(text: str) -> str:
        return " ".join(normalise(text).split())

    return wrapped


def english_normalizer(spelling_mapping: Mapping[str, str] | None = None) -> Normalizer:
    """Whisper's English normaliser (contractions, numbers, titles, spelling); empty spelling table by default."""
    return _collapse_whitespace(EnglishTextNormalizer(dict(spelling_mapping or {})))


def load_english_spelling_mapping(path: str | Path) -> dict[str, str]:
    """Read a Whisper `normalizer.json` (British → American spelling table) from a checkpoint folder or file."""
    path = Path(path)
    if path.is_dir():
        path = path / "normalizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no English spelling table at {path}")
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict):
        raise ValueError(f"{path} is not a JSON object mapping spellings")
    return {str(k): str(v) for k, v in mapping.items()}


def basic_normalizer() -> Normalizer:
    """Whisper's language-independent normaliser, keeping diacritics (Portuguese "ação" stays "ação")."""
    return _collapse_whitespace(BasicTextNormalizer(remove_diacritics=False))


# Language (primary subtag, lower case) → normaliser factory; languages not listed use DEFAULT_NORMALIZER.
NORMALIZER_REGISTRY: dict[str, Callable[[], Normalizer]] = {
    "en": english_normalizer,
    "english": english_normalizer,
}
DEFAULT_NORMALIZER: Callable[[], Normalizer] = basic_normalizer


def _language_key(language: str) -> str:
    """Primary language subtag in lower case: "pt-BR" → "pt", "en_US" → "en"."""
    key = language.strip().replace("_", "-").split("-")[0].lower()
    if not key:
        raise ValueError(f"empty language code {language!r}")
    return key


@functools.lru_cache(maxsize=None)
def _normalizer_for_key(key: str) -> Normalizer:
    return NORMALIZER_REGISTRY.get(key, DEFAULT_NORMALIZER)()


def normalizer_for(language: str) -> Normalizer:
    """The text normaliser used to score `language` (English → EnglishTextNormalizer, else BasicTextNormalizer)."""
    return _normalizer_for_key(_language_key(language))
