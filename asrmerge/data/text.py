"""Sentence generators for the synthetic corpus: small template grammars, numbers spelled out in words.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from asrmerge.data.languages import canonical_language
from asrmerge.data.wordlists import WordSequenceGenerator, content_word_sampler

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Numbers in words
# ---------------------------------------------------------------------------------------------------------------

_PT_UNITS = (
    "zero um dois três quatro cinco seis sete oito nove dez onze doze treze catorze quinze "
    "dezasseis dezassete dezoito dezanove"
).split()
_PT_BR_UNITS = _PT_UNITS[:14] + "quatorze quinze dezesseis dezessete dezoito dezenove".split()
_PT_TENS = {2: "vinte", 3: "trinta", 4: "quarenta", 5: "cinquenta", 6: "sessenta", 7: "setenta", 8: "oitenta", 9: "noventa"}
_PT_HUNDREDS = {
    1: "cento", 2: "duzentos", 3: "trezentos", 4: "quatrocentos", 5: "quinhentos",
    6: "seiscentos", 7: "setecentos", 8: "oitocentos", 9: "novecentos",
}
_PT_FEMININE = {"um": "uma", "dois": "duas"}


def _pt_below_1000(n: int, feminine: bool, brazilian: bool) -> str:
    units = _PT_BR_UNITS if brazilian else _PT_UNITS
    if n == 100:
        return "cem"
    if n < 20:
        word = units[n]
        return _PT_FEMININE.get(word, word) if feminine else word
    parts: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        word = _PT_HUNDREDS[hundreds]
        parts.append(word[:-2] + "as" if feminine and word.endswith("entos") else word)
    if rest:
        if rest < 20:
            parts.append(_pt_below_1000(rest, feminine, brazilian))
        else:
            tens, unit = divmod(rest, 10)
            parts.append(_PT_TENS[tens])
            if unit:
                parts.append(_pt_below_1000(unit, feminine, brazilian))
    return " e ".join(parts)


def _pt_words(n: int, feminine: bool, brazilian: bool) -> str:
    if n < 1000:
        return _pt_below_1000(n, feminine, brazilian)
    thousands, rest = divmod(n, 1000)
    head = "mil" if thousands == 1 else f"{_pt_below_1000(thousands, feminine, brazilian)} mil"
    if rest == 0:
        return head
    # "mil e cem", "dois mil e cinco", but "mil duzentos e trinta".
    joiner = " e " if rest < 100 or rest % 100 == 0 else " "
    return head + joiner + _pt_below_1000(rest, feminine, brazilian)


_EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def _en_below_100(n: int) -> str:
    if n < 20:
        return _EN_UNITS[n]
    tens, unit = divmod(n, 10)
    return _EN_TENS[tens] + (f" {_EN_UNITS[unit]}" if unit else "")


def _en_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _en_below_100(rest)
    head = f"{_EN_UNITS[hundreds]} hundred"
    return head + (f" and {_en_below_100(rest)}" if rest else "")


def _en_words(n: int, feminine: bool) -> str:
    if n < 1000:
        return _en_below_1000(n)
    thousands, rest = divmod(n, 1000)
    head = f"{_en_below_1000(thousands)} thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + _en_below_1000(rest)


_ES_BELOW_30 = (
    "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciséis "
    "diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro veinticinco "
    "veintiséis veintisiete veintiocho veintinueve"
).split()
_ES_TENS = {3: "treinta", 4: "cuarenta", 5: "cincuenta", 6: "sesenta", 7: "setenta", 8: "ochenta", 9: "noventa"}
_ES_HUNDREDS = {
    1: "ciento", 2: "doscientos", 3: "trescientos", 4: "cuatrocientos", 5: "quinientos",
    6: "seiscientos", 7: "setecientos", 8: "ochocientos", 9: "novecientos",
}


def _es_below_1000(n: int, feminine: bool) -> str:
    if n == 100:
        return "cien"
    hundreds, rest = divmod(n, 100)
    parts: list[str] = []
    if hundreds:
        word = _ES_HUNDREDS[hundreds]
        parts.append(word[:-2] + "as" if feminine and word.endswith("ientos") else word)
    if rest or not hundreds:
        if rest < 30:
            word = _ES_BELOW_30[rest]
        else:
            tens, unit = divmod(rest, 10)
            word = _ES_TENS[tens] + (f" y {_ES_BELOW_30[unit]}" if unit else "")
        if feminine and word.endswith("uno"):
            word = word[:-1] + "a"
        parts.append(word)
    return " ".join(parts)


def _es_words(n: int, feminine: bool) -> str:
    if n < 1000:
        return _es_below_1000(n, feminine)
    thousands, rest = divmod(n, 1000)
    if thousands == 1:
        head = "mil"
    else:
        prefix = _es_below_1000(thousands, feminine)
        # Apocope before "mil": "veintiún mil", "treinta y un mil".
        if prefix.endswith("veintiuno"):
            prefix = prefix[:-3] + "ún"
        elif prefix.endswith("uno"):
            prefix = prefix[:-1]
        head = f"{prefix} mil"
    return head + (f" {_es_below_1000(rest, feminine)}" if rest else "")


_FR_BELOW_17 = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
_FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def _fr_below_100(n: int) -> str:
    if n < 17:
        return _FR_BELOW_17[n]
    if n < 20:
        return f"dix {_FR_BELOW_17[n - 10]}"
    if n < 70:
        tens, unit = divmod(n, 10)
        if unit == 0:
            return _FR_TENS[tens]
        return _FR_TENS[tens] + (" et un" if unit == 1 else f" {_FR_BELOW_17[unit]}")
    if n < 80:
        return "soixante et onze" if n == 71 else f"soixante {_fr_below_100(n - 60)}"
    if n == 80:
        return "quatre vingts"
    return f"quatre vingt {_fr_below_100(n - 80)}"


def _fr_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _fr_below_100(rest)
    head = "cent" if hundreds == 1 else f"{_FR_BELOW_17[hundreds]} cent"
    if rest == 0:
        return head + ("s" if hundreds > 1 else "")
    return f"{head} {_fr_below_100(rest)}"


def _fr_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _fr_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        if thousands == 1:
            head = "mille"
        else:
            prefix = _fr_below_1000(thousands)
            # "deux cent mille", "quatre vingt mille": no plural s before "mille".
            if prefix.endswith(("cents", "vingts")):
                prefix = prefix[:-1]
            head = f"{prefix} mille"
        words = head + (f" {_fr_below_1000(rest)}" if rest else "")
    if feminine and (words == "un" or words.endswith((" un", " et un"))):
        words += "e"
    return words


_IT_BELOW_20 = (
    "zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici quindici "
    "sedici diciassette diciotto diciannove"
).split()
_IT_TENS = {2: "venti", 3: "trenta", 4: "quaranta", 5: "cinquanta", 6: "sessanta", 7: "settanta", 8: "ottanta", 9: "novanta"}


def _it_below_100(n: int) -> str:
    if n < 20:
        return _IT_BELOW_20[n]
    tens, unit = divmod(n, 10)
    word = _IT_TENS[tens]
    if unit == 0:
        return word
    if unit in (1, 8):  # ventuno, ventotto
        word = word[:-1]
    return word + _IT_BELOW_20[unit]


def _it_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _it_below_100(rest)
    head = "cento" if hundreds == 1 else _IT_BELOW_20[hundreds] + "cento"
    if rest == 0:
        return head
    tail = _it_below_100(rest)
    if tail.startswith("ott"):  # centotto, centottanta
        head = head[:-1]
    return head + tail


def _it_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _it_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        head = "mille" if thousands == 1 else _it_below_1000(thousands) + "mila"
        words = head + (_it_below_1000(rest) if rest else "")
    if len(words) > 3 and words.endswith("tre"):  # ventitré, centotré
        words = words[:-3] + "tré"
    if feminine and words == "uno":
        words = "una"
    return words


_DE_BELOW_20 = (
    "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
    "sechzehn siebzehn achtzehn neunzehn"
).split()
_DE_TENS = {2: "zwanzig", 3: "dreißig", 4: "vierzig", 5: "fünfzig", 6: "sechzig", 7: "siebzig", 8: "achtzig", 9: "neunzig"}


def _de_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    head = ""
    if hundreds:
        head = "hundert" if hundreds == 1 else _DE_BELOW_20[hundreds] + "hundert"
    if rest == 0:
        return head or "null"
    if rest < 20:
        tail = _DE_BELOW_20[rest]
    else:
        tens, unit = divmod(rest, 10)
        tail = _DE_TENS[tens] if unit == 0 else ("ein" if unit == 1 else _DE_BELOW_20[unit]) + "und" + _DE_TENS[tens]
    return head + tail


def _de_words(n: int, feminine: bool) -> str:
    if n < 1000:
        words = _de_below_1000(n)
    else:
        thousands, rest = divmod(n, 1000)
        prefix = "" if thousands == 1 else _de_below_1000(thousands)
        if prefix.endswith("eins"):
            prefix = prefix[:-1]
        words = prefix + "tausend" + (_de_below_1000(rest) if rest else "")
    if feminine and words == "eins":
        words = "eine"
    return words


NumberSpeller = Callable[[int, bool], str]

# language -> speller(n, feminine); numbers from 0 to 999 999.
NUMBER_SPELLERS: dict[str, NumberSpeller] = {
    "pt": functools.partial(_pt_words, brazilian=False),
    "pt-BR": functools.partial(_pt_words, brazilian=True),
    "en": _en_words,
    "es": _es_words,
    "fr": _fr_words,
    "it": _it_words,
    "de": _de_words,
}

MAX_NUMBER = 999_999


def number_to_words(n: int, language: str = "pt", *, feminine: bool = False) -> str:
    """Spell a whole number 0..999 999 in words, lower case, words separated by spaces.

    ``language`` is a spec language code (``pt``, ``pt-BR``, ``en``, ``es``, ``fr``, ``it``, ``de``); a regional
    code without a speller of its own falls back to its base language (``en-US`` -> ``en``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"number_to_words needs an integer, got {n!r}")
    n = int(n)
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words supports 0..{MAX_NUMBER}, got {n}")
    code = canonical_language(language)
    speller = NUMBER_SPELLERS.get(code) or NUMBER_SPELLERS.get(code.split("-", 1)[0])
    if speller is None:
        raise ValueError(f"no number speller for language {language!r} (have: {', '.join(sorted(NUMBER_SPELLERS))})")
    return speller(n, feminine)


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
