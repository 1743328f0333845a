"""Build a synthetic speech set (text grammar -> espeak-ng -> channel effects -> WAV + manifest).

A *set spec* (one entry of the workflow config's corpus section)::

    weather:                   # set name
      role: domain             # domain | ood | english | brazilian | multilingual | general
      language: pt             # spec language code, or a list (each utterance picks one uniformly)
      text: weather            # text generator name, or a list (each utterance picks one its language supports)
      voices: [pt+m1, pt+f3]   # espeak voices; or {language: [voices]} for mixed-language sets
      rate: [150, 190]         # words per minute: [low, high] drawn uniformly per utterance, or one number
      pitch: [30, 60]          # espeak pitch 0-99: [low, high] or one number
      channel:                 # effects in order (asrmerge.data.channel); [] = clean
        - {type: noise, snr_db: [10, 20]}
      sizes: {train: 80, validation: 16, test: 24}
      max_duration: 5.5        # optional: seconds; longer renditions are redrawn with a new sentence
      padding: 0.1             # optional: seconds of silence before and after the speech
      description: ...         # optional free text

Only ``role``, ``language``, ``text`` and ``sizes`` are required; ``voices`` defaults to the language's plain
espeak voice, ``rate`` to 175, ``pitch`` to 50, ``channel`` to [].

``extends: <name>`` starts from the set ``<name>`` of the demo world (asrmerge.data.worlds.default_sets) and replaces only the keys given (whole
values, no deep merge), e.g. ``weather: {extends: weather, sizes: {train: 400, validation: 50, test: 100}}``.

Held-out sentences: a fixed slice of every grammar's sentence space (crc32 of the transcript modulo
HELDOUT_MODULUS equal to 0) is reserved for evaluation. Sets with role ``general`` (pretraining) never use it,
and the evaluation-only roles (``ood``, ``english``, ``brazilian``, ``multilingual``) use nothing else, so no
test sentence of those sets appears in the pretraining mix. Domain sets are not restricted (their splits are
kept apart by the per-set deduplication below).

`build_set` is deterministic in (seed, set name, spec): each utterance draws from its own generator seeded by
(seed, crc32(name), split, index), so the same inputs give byte-identical audio and manifest. Splits are built
test first, then validation, then train, and no transcript repeats anywhere in a set: resizing the train split
leaves the test split unchanged.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asrmerge.layout import MANIFEST_NAME
from asrmerge.data.channel import resolve_chain, run_chain, validate_chain
from asrmerge.data.espeak import PITCH_RANGE, RATE_RANGE, EspeakSynthesizer, resolve_voice
from asrmerge.data.languages import canonical_language, language_variant, whisper_language
from asrmerge.data.manifest import SPLITS, Utterance, write_manifest, write_wav
from asrmerge.data.text import TEXT_GENERATORS, get_generator
from asrmerge.data.worlds import default_sets
from asrmerge.defaults import default
from asrmerge.guard import mark_folder

logger = logging.getLogger(__name__)

# The one list of set roles (the config schema's enums and the report's column groups follow it; tests check).
ROLES: tuple[str, ...] = (
    "domain", "ood", "general_test", "words_test", "long_form", "accented", "english", "brazilian", "multilingual",
    "general",
)
#: Roles whose sets are scored in the tables besides the domains' test splits.
TEST_ROLES: tuple[str, ...] = tuple(role for role in ROLES if role not in ("domain", "general"))


def required_splits(role: str) -> tuple[str, ...]:
    """The splits a set of `role` must have rows in: a domain is fine-tuned, validated and tested; the general mix is
    trained on; every other role is only tested."""
    return {"domain": ("train", "validation", "test"), "general": ("train",)}.get(role, ("test",))


REQUIRED_KEYS: tuple[str, ...] = ("role", "language", "text", "sizes")
OPTIONAL_KEYS: tuple[str, ...] = (
    "voices", "rate", "pitch", "channel", "max_duration", "padding", "description", "extends", "metric",
)
BUILD_ORDER: tuple[str, ...] = ("test", "validation", "train")
SPLIT_CODES: dict[str, int] = {split: index for index, split in enumerate(SPLITS)}

DEFAULT_RATE = 175
DEFAULT_PITCH = 50
DEFAULT_MAX_DURATION = 5.5
DEFAULT_PADDING = 0.1
MAX_ATTEMPTS = 400  # sentence draws per utterance before giving up (duplicates, wrong slice or too long)
HELDOUT_MODULUS = 8
PRETRAINING_ROLES: frozenset[str] = frozenset({"general"})
HELDOUT_ROLES: frozenset[str] = frozenset(TEST_ROLES)
PEAK_LIMIT = 0.99

_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Plain espeak voice per spec language, used when a spec gives no voices.
DEFAULT_VOICES: dict[str, str] = {
    "pt": "pt", "pt-BR": "pt-br", "en": "en", "en-US": "en-us", "es": "es", "fr": "fr", "it": "it", "de": "de",
}


@dataclass(frozen=True)
class SetSpec:
    """A validated set spec (see the module docstring for the YAML form)."""

    name: str
    role: str
    languages: tuple[str, ...]
    texts: tuple[str, ...]
    voices: Mapping[str, tuple[str, ...]]
    rate: tuple[int, int]
    pitch: tuple[int, int]
    channel: tuple[Mapping[str, Any], ...]
    sizes: Mapping[str, int]
    max_duration: float
    padding: float

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def _fail(name: str, key: str, message: str) -> ValueError:
    return ValueError(f"corpus set {name!r}, key {key!r}: {message}")


def _as_list(value: Any, name: str, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) and v for v in items):
        raise _fail(name, key, f"expected a name or a non-empty list of names, got {value!r}")
    if len(set(items)) != len(items):
        raise _fail(name, key, f"lists a name twice: {value!r}")
    return list(items)


def _int_range(value: Any, name: str, key: str, bounds: tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = value
    elif (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
    else:
        raise _fail(name, key, f"expected a number or [low, high], got {value!r}")
    if low != int(low) or high != int(high):
        raise _fail(name, key, f"expected whole numbers, got {value!r}")
    low, high = int(low), int(high)
    if not bounds[0] <= low <= high <= bounds[1]:
        raise _fail(name, key, f"{value!r} must satisfy {bounds[0]} <= low <= high <= {bounds[1]}")
    return low, high


def _number(value: Any, name: str, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(name, key, f"expected a number in {low}..{high}, got {value!r}")
    return float(value)


def _parse_languages(name: str, spec: Mapping[str, Any]) -> tuple[str, ...]:
    languages: list[str] = []
    for code in _as_list(spec["language"], name, "language"):
        try:
            canonical = canonical_language(code)
            whisper_language(canonical)
        except ValueError as err:
            raise _fail(name, "language", str(err)) from None
        languages.append(canonical)
    if len(set(languages)) != len(languages):
        raise _fail(name, "language", f"lists a language twice: {spec['language']!r}")
    return tuple(languages)


def _parse_texts(name: str, spec: Mapping[str, Any], languages: Sequence[str]) -> tuple[str, ...]:
    texts = _as_list(spec["text"], name, "text")
    for text in texts:
        if text not in TEXT_GENERATORS:
            raise _fail(name, "text", f"unknown text generator {text!r} (known: {', '.join(sorted(TEXT_GENERATORS))})")
        supported = get_generator(text).languages
        if not any(language in supported for language in languages):
            raise _fail(
                name, "text",
                f"generator {text!r} supports {', '.join(sorted(supported))}, none of {', '.join(languages)}",
            )
    for language in languages:
        if not any(language in get_generator(text).languages for text in texts):
            raise _fail(name, "text", f"no generator among {texts} supports language {language!r}")
    return tuple(texts)


def _check_voice(name: str, voice: str, language: str | None) -> None:
    try:
        info = resolve_voice(voice)
    except ValueError as err:
        raise _fail(name, "voices", str(err)) from None
    if language is not None and not info.speaks(language):
        raise _fail(name, "voices", f"voice {voice!r} ({info.name}) does not speak {language!r}")


def _parse_voices(name: str, spec: Mapping[str, Any], languages: Sequence[str]) -> dict[str, tuple[str, ...]]:
    value = spec.get("voices")
    if value is None:
        voices: dict[str, tuple[str, ...]] = {}
        for language in languages:
            default = DEFAULT_VOICES.get(language, language.lower())
            _check_voice(name, default, language)
            voices[language] = (default,)
        return voices
    if isinstance(value, Mapping):
        keyed: dict[str, tuple[str, ...]] = {}
        for key, listed in value.items():
            try:
                language = canonical_language(str(key))
            except ValueError as err:
                raise _fail(name, "voices", str(err)) from None
            if language not in languages:
                raise _fail(name, "voices", f"voices given for {key!r}, which is not among the set's languages {list(languages)}")
            entries = _as_list(listed, name, "voices")
            for voice in entries:
                _check_voice(name, voice, language)
            keyed[language] = tuple(entries)
        missing = [language for language in languages if language not in keyed]
        if missing:
            raise _fail(name, "voices", f"no voices for language(s) {', '.join(missing)}")
        return keyed
    entries = _as_list(value, name, "voices")
    for voice in entries:
        _check_voice(name, voice, None)
        if not any(resolve_voice(voice).speaks(language) for language in languages):
            raise _fail(name, "voices", f"voice {voice!r} speaks none of the set's languages {list(languages)}")
    by_language: dict[str, tuple[str, ...]] = {}
    for language in languages:
        matching = tuple(voice for voice in entries if resolve_voice(voice).speaks(language))
        if not matching:
            raise _fail(name, "voices", f"no listed voice speaks {language!r}")
        by_language[language] = matching
    return by_language


def _parse_sizes(name: str, spec: Mapping[str, Any]) -> dict[str, int]:
    sizes = spec["sizes"]
    if not isinstance(sizes, Mapping) or not sizes:
        raise _fail(name, "sizes", f"expected a mapping such as {{train: 80, test: 24}}, got {sizes!r}")
    parsed: dict[str, int] = {}
    for split, count in sizes.items():
        if split not in SPLITS:
            raise _fail(name, "sizes", f"unknown split {split!r} (expected {', '.join(SPLITS)})")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _fail(name, "sizes", f"{split}: expected a whole number >= 0, got {count!r}")
        parsed[split] = count
    if not any(parsed.values()):
        raise _fail(name, "sizes", "every split is empty")
    return parsed


def expand_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``extends``: the named default set's spec with this spec's keys put over it."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"corpus set {name!r}: spec must be a mapping, got {type(spec).__name__}")
    if "extends" not in spec:
        return dict(spec)
    defaults = default_sets()
    base_name = spec["extends"]
    if base_name not in defaults:
        raise _fail(name, "extends", f"no default set {base_name!r} (defaults: {', '.join(defaults)})")
    merged = dict(defaults[base_name])
    merged.update({key: value for key, value in spec.items() if key != "extends"})
    return merged


def parse_spec(name: str, spec: Mapping[str, Any]) -> SetSpec:
    """Validate one set spec; ValueError naming the set and the key on anything wrong."""
    if not isinstance(name, str) or not _SET_NAME.match(name):
        raise ValueError(f"corpus set name {name!r} must be letters, digits, '_', '-' or '.'")
    spec = expand_spec(name, spec)
    for key in spec:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise _fail(name, str(key), f"unknown key (known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    for key in REQUIRED_KEYS:
        if key not in spec:
            raise _fail(name, key, "missing")
    role = spec["role"]
    if role not in ROLES:
        raise _fail(name, "role", f"unknown role {role!r} (expected {', '.join(ROLES)})")
    languages = _parse_languages(name, spec)
    texts = _parse_texts(name, spec, languages)
    voices = _parse_voices(name, spec, languages)
    rate = _int_range(spec.get("rate", DEFAULT_RATE), name, "rate", RATE_RANGE)
    pitch = _int_range(spec.get("pitch", DEFAULT_PITCH), name, "pitch", PITCH_RANGE)
    channel = spec.get("channel", [])
    if channel is None:
        channel = []
    validate_chain(channel, where=f"corpus set {name!r}, key 'channel'")
    padding = _number(spec.get("padding", DEFAULT_PADDING), name, "padding", 0.0, 2.0)
    max_duration = _number(spec.get("max_duration", DEFAULT_MAX_DURATION), name, "max_duration", 2 * padding + 0.5, 60.0)
    if "description" in spec and not isinstance(spec["description"], str):
        raise _fail(name, "description", f"expected text, got {spec['description']!r}")
    return SetSpec(
        name=name, role=role, languages=languages, texts=texts, voices=voices, rate=rate, pitch=pitch,
        channel=tuple(dict(step) for step in channel), sizes=_parse_sizes(name, spec),
        max_duration=max_duration, padding=padding,
    )


def utterance_rng(seed: int, name: str, split: str, index: int) -> np.random.Generator:
    """The generator of one utterance, from (seed, crc32 of the set name, split, index)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8")), SPLIT_CODES[split], int(index)])


def is_heldout_text(text: str) -> bool:
    """True for transcripts in the evaluation-only slice (see the module docstring)."""
    return zlib.crc32(text.encode("utf-8")) % HELDOUT_MODULUS == 0


def _text_allowed(role: str, text: str) -> bool:
    if role in PRETRAINING_ROLES:
        return not is_heldout_text(text)
    if role in HELDOUT_ROLES:
        return is_heldout_text(text)
    return True


def _draw(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]


def _round_floats(step: Mapping[str, Any]) -> dict[str, Any]:
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in step.items()}


class _SetBuilder:
    """Builds the utterances of one parsed set; holds the synthesiser and the transcripts used so far."""

    def __init__(self, spec: SetSpec, out_dir: Path, seed: int, sample_rate: int) -> None:
        self.spec = spec
        self.out_dir = out_dir
        self.seed = seed
        self.sample_rate = sample_rate
        self.synthesizer = EspeakSynthesizer(sample_rate)
        self.padding = np.zeros(int(round(spec.padding * sample_rate)), dtype=np.float32)
        self.max_samples = int(spec.max_duration * sample_rate)
        self.seen: set[str] = set()

    def utterance(self, split: str, index: int) -> Utterance:
        spec = self.spec
        rng = utterance_rng(self.seed, spec.name, split, index)
        language = _draw(rng, spec.languages)
        voice = _draw(rng, spec.voices[language])
        rate = int(rng.integers(spec.rate[0], spec.rate[1] + 1))
        pitch = int(rng.integers(spec.pitch[0], spec.pitch[1] + 1))
        generator = _draw(rng, [text for text in spec.texts if language in get_generator(text).languages])
        text, speech = self._sentence(rng, generator, language, voice, rate, pitch, split, index)
        audio = np.concatenate([self.padding, speech, self.padding])
        chain = resolve_chain(spec.channel, rng)
        audio = run_chain(audio, self.sample_rate, chain, rng)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > PEAK_LIMIT:
            audio = audio * np.float32(PEAK_LIMIT / peak)
        utt_id = f"{spec.name}-{split}-{index:05d}"
        path = self.out_dir / "audio" / split / f"{utt_id}.wav"
        write_wav(path, audio, self.sample_rate)
        return Utterance(
            id=utt_id,
            audio=path.resolve(),
            text=text,
            duration=round(audio.size / self.sample_rate, 4),
            set=spec.name,
            split=split,
            language=whisper_language(language),
            variant=language_variant(language),
            extra={
                "voice": voice, "rate": rate, "pitch": pitch, "generator": generator,
                "channel": [_round_floats(step) for step in chain],
            },
        )

    def _sentence(
        self, rng: np.random.Generator, generator: str, language: str, voice: str, rate: int, pitch: int,
        split: str, index: int,
    ) -> tuple[str, np.ndarray]:
        """A transcript new to this set whose rendition fits max_duration, and its speech."""
        budget = self.max_samples - 2 * self.padding.size
        too_long = duplicates = excluded = 0
        for _ in range(MAX_ATTEMPTS):
            text = " ".join(get_generator(generator)(rng, language).split())
            if not _text_allowed(self.spec.role, text):
                excluded += 1
                continue
            if text in self.seen:
                duplicates += 1
                continue
            speech = self.synthesizer.synthesize(text, voice=voice, rate=rate, pitch=pitch)
            if speech.size > budget:
                too_long += 1
                continue
            self.seen.add(text)
            return text, speech
        raise ValueError(
            f"corpus set {self.spec.name!r}: no usable sentence for {split} utterance {index} after {MAX_ATTEMPTS} "
            f"draws ({duplicates} repeated an earlier transcript, {excluded} outside the role's held-out slice "
            f"rule, {too_long} longer than max_duration "
            f"{self.spec.max_duration} s): generator {generator!r} ({language}) is too small for sizes "
            f"{dict(self.spec.sizes)}, or max_duration too short for rate {rate}"
        )


def _remove_stale_audio(out_dir: Path, keep: set[Path]) -> None:
    """Delete WAV files under out_dir/audio/<split>/ that the new manifest does not list."""
    for split in SPLITS:
        folder = out_dir / "audio" / split
        if not folder.is_dir():
            continue
        for path in folder.glob("*.wav"):
            if path.resolve() not in keep:
                path.unlink()


def build_set(name: str, spec: Mapping[str, Any], out_dir: Path, *, seed: int, sample_rate: int = default("corpus.sample_rate")) -> Path:
    """Synthesise set ``name`` into ``out_dir``: ``audio/<split>/<id>.wav`` and ``manifest.jsonl``; returns the
    manifest path. Deterministic in (seed, name, spec, sample_rate); see the module docstring."""
    parsed = parse_spec(name, spec)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"corpus set {name!r}: seed must be a whole number >= 0, got {seed!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ValueError(f"corpus set {name!r}: sample_rate must be a whole number >= 8000, got {sample_rate!r}")
    out = Path(out_dir)
    start = time.perf_counter()
    builder = _SetBuilder(parsed, out, int(seed), sample_rate)
    by_split: dict[str, list[Utterance]] = {}
    for split in BUILD_ORDER:
        count = parsed.sizes.get(split, 0)
        if count == 0:
            continue
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        by_split[split] = [builder.utterance(split, index) for index in range(count)]
    rows = [utt for split in SPLITS for utt in by_split.get(split, [])]
    _remove_stale_audio(out, {Path(utt.audio) for utt in rows})
    manifest = write_manifest(out / MANIFEST_NAME, rows)
    mark_folder(out)  # written whole by this project: `asrmerge corpus --overwrite` may replace it
    hours = sum(utt.duration for utt in rows) / 3600
    logger.info(
        "set %s: %d utterances (%s), %.2f h of audio, in %.1f s -> %s",
        name, len(rows), ", ".join(f"{split} {len(by_split[split])}" for split in SPLITS if split in by_split),
        hours, time.perf_counter() - start, manifest,
    )
    return manifest


def build_sets(
    specs: Mapping[str, Mapping[str, Any]], out_root: Path, *, seed: int, sample_rate: int = default("corpus.sample_rate")
) -> dict[str, Path]:
    """Build every set of ``specs`` into ``out_root/<name>``; returns name -> manifest path."""
    for name, spec in specs.items():
        parse_spec(name, spec)  # fail before synthesising anything
    return {
        name: build_set(name, spec, Path(out_root) / name, seed=seed, sample_rate=sample_rate)
        for name, spec in specs.items()
    }

