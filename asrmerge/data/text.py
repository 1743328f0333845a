"""Sentence generators for the synthetic corpus: small template grammars (numbers in words: asrmerge.data.numbers).

Every generator is a callable ``generator(rng, language) -> str`` registered by name in TEXT_GENERATORS.
The built-in generators are read from ``asrmerge/data/lexicon/<name>.<language>.txt``; one file per
(generator, language) pair. Output is lower-case words separated by single spaces, with no punctuation
except apostrophes inside words (``o'clock``, ``l'école``): transcripts that a Whisper text normaliser leaves
unchanged.

Lexicon file format (UTF-8)::

    # comment
    @templates
    amanhã {ceu} {regiao} [com vento {vento}]
    as temperaturas vão chegar aos {#20-42} graus
    @slot ceu
    céu limpo
    aguaceiros fracos
    ...

* ``{name}``: replaced by a uniformly chosen line of ``@slot name`` (slot lines may hold tokens too);
* ``[ ... ]``: an optional part, kept with probability 1/2 (no nesting; may hold tokens);
* ``{#a-b}``: an integer drawn uniformly from a..b, in words; ``{#f:a-b}`` the feminine form
  (Portuguese ``uma``/``duas``/``duzentas``; Spanish ``una``; French ``une``);
* ``{#digits:n}``: n digits read one by one (telephone numbers, postcodes);
* ``{@lex}``: one content word of the language at its natural frequency, from the wordfreq lists
  (`asrmerge.data.wordlists`): open vocabulary that a model can only transcribe by listening.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from asrmerge.data.languages import canonical_language
from asrmerge.data.numbers import MAX_NUMBER, number_to_words
from asrmerge.data.wordlists import WordSequenceGenerator, content_word_sampler

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Template grammars
# ---------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{([^{}\[\]]+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_NUMBER_TOKEN = re.compile(r"^#(?:(f):)?(\d+)-(\d+)$")
_DIGITS_TOKEN = re.compile(r"^#digits:(\d+)$")
LEXICON_TOKEN = "@lex"
_SLOT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_DEPTH = 8


def is_transcript_word(word: str) -> bool:
    """True for a lower-case word of letters, optionally with inner apostrophes (``l'eau``, ``o'clock``)."""
    core = word.replace("'", "")
    return bool(core) and core.isalpha() and word == word.lower() and not word.startswith("'") and not word.endswith("'")


@dataclass(frozen=True)
class Grammar:
    """One template grammar: templates plus named slots, for one language."""

    name: str
    language: str
    templates: tuple[str, ...]
    slots: Mapping[str, tuple[str, ...]]
    source: str = "<memory>"

    def generate(self, rng: np.random.Generator) -> str:
        """One sentence, drawn with ``rng``."""
        template = self.templates[int(rng.integers(len(self.templates)))]
        return " ".join(self._expand(template, rng, 0).split())

    def _expand(self, text: str, rng: np.random.Generator, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise ValueError(f"{self.source}: slots nest deeper than {_MAX_DEPTH} (a cycle?)")
        text = _OPTIONAL.sub(lambda m: m.group(1) if rng.random() < 0.5 else "", text)
        return _TOKEN.sub(lambda m: self._fill(m.group(1).strip(), rng, depth), text)

    def _fill(self, token: str, rng: np.random.Generator, depth: int) -> str:
        number = _NUMBER_TOKEN.match(token)
        if number:
            low, high = int(number.group(2)), int(number.group(3))
            value = int(rng.integers(low, high + 1))
            return number_to_words(value, self.language, feminine=number.group(1) == "f")
        digits = _DIGITS_TOKEN.match(token)
        if digits:
            count = int(digits.group(1))
            return " ".join(number_to_words(int(d), self.language) for d in rng.integers(0, 10, size=count))
        if token == LEXICON_TOKEN:
            return content_word_sampler(self.language).draw(rng, 1)[0]
        options = self.slots[token]
        return self._expand(options[int(rng.integers(len(options)))], rng, depth + 1)

    def vocabulary(self) -> frozenset[str]:
        """Every word the grammar can produce (number words and, with ``{@lex}`` slots, the word list included)."""
        words: set[str] = set()
        for line in self._lines():
            for token in _TOKEN.findall(line):
                words.update(self._token_vocabulary(token.strip()))
            plain = _TOKEN.sub(" ", line).replace("[", " ").replace("]", " ")
            words.update(plain.split())
        return frozenset(words)

    def content_words(self) -> frozenset[str]:
        """Words written in the grammar itself (templates and slots), numbers excluded."""
        words: set[str] = set()
        for line in self._lines():
            words.update(_TOKEN.sub(" ", line).replace("[", " ").replace("]", " ").split())
        return frozenset(words)

    def _lines(self) -> Iterable[str]:
        yield from self.templates
        for options in self.slots.values():
            yield from options

    def _token_vocabulary(self, token: str) -> set[str]:
        number = _NUMBER_TOKEN.match(token)
        if number:
            low, high = int(number.group(2)), int(number.group(3))
            return set(_number_words(self.language, low, high, number.group(1) == "f"))
        if _DIGITS_TOKEN.match(token):
            return set(_number_words(self.language, 0, 9, False))
        if token == LEXICON_TOKEN:
            return set(content_word_sampler(self.language).words)
        return set()

    def check(self) -> None:
        """Raise ValueError if a token is malformed, a slot is missing, or a literal is not transcript text."""
        for line in self._lines():
            for token in _TOKEN.findall(line):
                token = token.strip()
                if token.startswith("#"):
                    number = _NUMBER_TOKEN.match(token)
                    if number:
                        low, high = int(number.group(2)), int(number.group(3))
                        if not 0 <= low <= high <= MAX_NUMBER:
                            raise ValueError(f"{self.source}: bad number range {{{token}}} in {line!r}")
                    elif not _DIGITS_TOKEN.match(token):
                        raise ValueError(f"{self.source}: bad number token {{{token}}} in {line!r}")
                elif token != LEXICON_TOKEN and token not in self.slots:
                    raise ValueError(f"{self.source}: slot {{{token}}} used in {line!r} is not defined")
            plain = _TOKEN.sub(" ", line)
            if "{" in plain or "}" in plain or plain.count("[") != plain.count("]"):
                raise ValueError(f"{self.source}: unbalanced brackets in {line!r}")
            for word in plain.replace("[", " ").replace("]", " ").split():
                if not is_transcript_word(word):
                    raise ValueError(f"{self.source}: {word!r} in {line!r} is not a lower-case word")


@functools.lru_cache(maxsize=None)
def _number_words(language: str, low: int, high: int, feminine: bool) -> frozenset[str]:
    words: set[str] = set()
    for value in range(low, high + 1):
        words.update(number_to_words(value, language, feminine=feminine).split())
    return frozenset(words)


def parse_grammar(text: str, *, name: str, language: str, source: str = "<memory>") -> Grammar:
    """Parse the lexicon file format (see the module docstring) into a checked Grammar."""
    templates: list[str] = []
    slots: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        if line == "@templates":
            current = templates
        elif line.startswith("@slot"):
            parts = line.split()
            if len(parts) != 2 or not _SLOT_NAME.match(parts[1]):
                raise ValueError(f"{where}: expected '@slot name', got {line!r}")
            if parts[1] in slots:
                raise ValueError(f"{where}: slot {parts[1]!r} defined twice")
            current = slots.setdefault(parts[1], [])
        elif line.startswith("@"):
            raise ValueError(f"{where}: unknown directive {line!r}")
        elif current is None:
            raise ValueError(f"{where}: text before '@templates' or '@slot'")
        else:
            current.append(" ".join(line.split()))
    if not templates:
        raise ValueError(f"{source}: no templates")
    for slot, options in slots.items():
        if not options:
            raise ValueError(f"{source}: slot {slot!r} is empty")
    grammar = Grammar(
        name=name,
        language=canonical_language(language),
        templates=tuple(templates),
        slots={key: tuple(values) for key, values in slots.items()},
        source=source,
    )
    grammar.check()
    return grammar


# ---------------------------------------------------------------------------------------------------------------
# Generators and their registry
# ---------------------------------------------------------------------------------------------------------------


class TextGenerator(Protocol):
    """What the corpus builder needs from a text generator."""

    name: str

    @property
    def languages(self) -> frozenset[str]: ...

    def __call__(self, rng: np.random.Generator, language: str) -> str: ...


@dataclass(frozen=True)
class GrammarGenerator:
    """A named text generator with one grammar per language."""

    name: str
    grammars: Mapping[str, Grammar]
    description: str = ""

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(self.grammars)

    def grammar(self, language: str) -> Grammar:
        """The grammar for ``language``; ValueError naming both if this generator lacks it."""
        code = canonical_language(language)
        if code not in self.grammars:
            raise ValueError(
                f"text generator {self.name!r} does not support language {language!r} "
                f"(supports: {', '.join(sorted(self.grammars))})"
            )
        return self.grammars[code]

    def __call__(self, rng: np.random.Generator, language: str) -> str:
        return self.grammar(language).generate(rng)

    def vocabulary(self, language: str) -> frozenset[str]:
        return self.grammar(language).vocabulary()


LEXICON_PACKAGE = "asrmerge.data"
LEXICON_FOLDER = "lexicon"

# Short descriptions of the built-in generators, shown by the CLI and used in docs.
DESCRIPTIONS: dict[str, str] = {
    "news": "broadcast news bulletins",
    "parliament": "parliamentary debate and votes",
    "medical": "clinical dictation: history, examination, prescriptions",
    "legal": "court rulings, contracts, legal citations",
    "banking": "telephone banking: menus, balances, transfers, cards",
    "weather": "weather forecasts",
    "sports": "sports reports, mostly football",
    "addresses": "postal addresses, postcodes, telephone numbers",
    "tech_support": "IT help desk calls",
    "conversation": "casual conversation",
    "tourism": "travel and hospitality (out-of-domain tests only)",
    "general": "everyday sentences in several languages (pretraining mix and non-EP test sets)",
}

# A text generator that is not a grammar: random word sequences for the open-vocabulary pretraining mix.
WORDS_GENERATOR = WordSequenceGenerator()


def load_builtin_generators() -> dict[str, GrammarGenerator]:
    """Read every ``lexicon/<name>.<language>.txt`` shipped with the package."""
    folder = importlib.resources.files(LEXICON_PACKAGE).joinpath(LEXICON_FOLDER)
    grammars: dict[str, dict[str, Grammar]] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".txt"):
            continue
        stem = entry.name[: -len(".txt")]
        name, _, language = stem.partition(".")
        if not language:
            raise ValueError(f"lexicon file {entry.name!r} is not named <generator>.<language>.txt")
        grammar = parse_grammar(
            entry.read_text(encoding="utf-8"), name=name, language=language, source=f"lexicon/{entry.name}"
        )
        grammars.setdefault(name, {})[grammar.language] = grammar
    return {
        name: GrammarGenerator(name=name, grammars=by_language, description=DESCRIPTIONS.get(name, ""))
        for name, by_language in sorted(grammars.items())
    }


# name -> generator(rng, language) -> str. Other modules may add entries (anything satisfying TextGenerator).
TEXT_GENERATORS: dict[str, TextGenerator] = {**load_builtin_generators(), WORDS_GENERATOR.name: WORDS_GENERATOR}

# The ten European Portuguese domains of the demo world, in a fixed order.
EP_DOMAINS: tuple[str, ...] = (
    "news", "parliament", "medical", "legal", "banking",
    "weather", "sports", "addresses", "tech_support", "conversation",
)


def get_generator(name: str) -> TextGenerator:
    """The registered generator ``name``; ValueError listing the known ones otherwise."""
    try:
        return TEXT_GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown text generator {name!r} (known: {', '.join(sorted(TEXT_GENERATORS))})") from None


def generate_text(name: str, rng: np.random.Generator, language: str) -> str:
    """One sentence from generator ``name`` in ``language``."""
    return get_generator(name)(rng, language)
