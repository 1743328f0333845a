"""Language codes shared by the corpus builder and the manifest format.

Two code systems meet here:

* the *spec* language, as written in a corpus spec and used to pick a text grammar and espeak voices:
  a base code, optionally with a region (``pt``, ``pt-BR``, ``en-US``);
* the *Whisper* language, written to the manifest's ``language`` field: the base code only (``pt``),
  with the region kept in the optional ``variant`` field (``pt-BR``).
"""

from __future__ import annotations

import re

# The language codes of Whisper's tokenizer (transformers' WhisperTokenizer LANGUAGES, 100 codes).
WHISPER_LANGUAGES: frozenset[str] = frozenset(
    """
    en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi
    ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd
    gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue
    """.split()
)

#: Languages written without spaces between words: scored by CER (Whisper's and FLEURS' convention), and their
#: speaking rate counted in characters.
UNSEGMENTED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})

_CODE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z0-9]{2,8}))?$")


def canonical_language(code: str) -> str:
    """Normalise a language code: lower-case base, upper-case two-letter region (``pt-br`` -> ``pt-BR``).

    Raises ValueError for something that is not shaped like a language code.
    """
    if not isinstance(code, str):
        raise ValueError(f"language code must be a string, got {code!r}")
    match = _CODE.match(code.strip())
    if match is None:
        raise ValueError(f"not a language code: {code!r}")
    base, region = match.group(1).lower(), match.group(2)
    if region is None:
        return base
    return f"{base}-{region.upper() if len(region) == 2 else region.lower()}"


def whisper_language(code: str) -> str:
    """The Whisper language code for a spec language (``pt-BR`` -> ``pt``); ValueError if Whisper lacks it."""
    base = canonical_language(code).split("-", 1)[0]
    if base not in WHISPER_LANGUAGES:
        raise ValueError(f"language {code!r} is not one of Whisper's languages")
    return base


def language_variant(code: str) -> str | None:
    """The regional variant of a spec language (``pt-BR`` -> ``pt-BR``), or None for a bare code."""
    canonical = canonical_language(code)
    return canonical if "-" in canonical else None
