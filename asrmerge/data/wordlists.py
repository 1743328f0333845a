"""Open-vocabulary text: real words of each language at their natural frequencies, from `wordfreq`.

The template grammars of `asrmerge.data.text` know a few hundred words per language; a model pretrained on them
alone recalls sentences instead of listening. These word lists (tens of thousands of words per language) give the
pretraining mix words the model can only get right by hearing them:

* `WordSequenceGenerator` (registered as text generator ``words``): random sequences of words, so that no
  sentence can be recalled;
* the grammar token ``{@lex}``: one content word (ranks past `FUNCTION_WORD_RANKS`) at its natural frequency,
  so template sentences carry open-vocabulary slots.

wordfreq has one Portuguese list (European and Brazilian spellings mixed); ``pt`` and ``pt-BR`` both read it.
Words are kept when they are lower-case letters of the language's alphabet (no digits, no symbols) and, outside
English, not more frequent in English than in the language itself (drops loanwords such as ``frozen`` from the
Portuguese list).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from asrmerge.data.languages import canonical_language

WORDFREQ_CODES: dict[str, str] = {"pt": "pt", "pt-BR": "pt", "en": "en", "es": "es", "fr": "fr", "it": "it", "de": "de"}
ALPHABETS: dict[str, str] = {
    "pt": "abcdefghijklmnopqrstuvwxyzáàâãçéêíóôõú",
    "en": "abcdefghijklmnopqrstuvwxyz",
    "es": "abcdefghijklmnopqrstuvwxyzáéíñóúü",
    "fr": "abcdefghijklmnopqrstuvwxyzàâæçéèêëîïôœùûüÿ",
    "it": "abcdefghijklmnopqrstuvwxyzàèéìíîòóùú",
    "de": "abcdefghijklmnopqrstuvwxyzäöüß",
}
WORDLIST = "large"
VOCABULARY_SIZE = 15_000  # words kept per language, most frequent first
FUNCTION_WORD_RANKS = 150  # the most frequent words, left out of {@lex} slots (articles, prepositions, pronouns)


@dataclass(frozen=True)
class WordList:
    """The kept words of one language, most frequent first, with their natural (unigram) frequencies."""

    language: str
    words: tuple[str, ...]
    frequencies: np.ndarray

    def sampler(self, exponent: float, skip: int = 0) -> "WordSampler":
        """Draws words with probability proportional to frequency**exponent, among ranks >= skip."""
        weights = self.frequencies[skip:] ** exponent
        return WordSampler(self.words[skip:], np.cumsum(weights) / weights.sum())


@dataclass(frozen=True)
class WordSampler:
    words: tuple[str, ...]
    cdf: np.ndarray

    def draw(self, rng: np.random.Generator, count: int) -> list[str]:
        picks = np.searchsorted(self.cdf, rng.random(count), side="right")
        return [self.words[min(int(i), len(self.words) - 1)] for i in picks]


def _in_alphabet(word: str, alphabet: str) -> bool:
    return all(char in alphabet for char in word)


@functools.lru_cache(maxsize=None)
def word_list(language: str) -> WordList:
    """The `VOCABULARY_SIZE` most frequent usable words of ``language`` (a spec code: pt, pt-BR, en, ...)."""
    import wordfreq  # loads its data files on first use only

    code = WORDFREQ_CODES.get(canonical_language(language))
    if code is None:
        raise ValueError(f"no word list for language {language!r} (have: {', '.join(sorted(WORDFREQ_CODES))})")
    alphabet = ALPHABETS[code]
    own = wordfreq.get_frequency_dict(code, wordlist=WORDLIST)  # word -> frequency, most frequent first
    english = own if code == "en" else wordfreq.get_frequency_dict("en", wordlist=WORDLIST)
    words: list[str] = []
    for word, frequency in own.items():
        if not _in_alphabet(word, alphabet) or (len(word) == 1 and len(words) >= FUNCTION_WORD_RANKS):
            continue
        if english.get(word, 0.0) > frequency:
            continue
        words.append(word)
        if len(words) == VOCABULARY_SIZE:
            break
    frequencies = np.array([own[word] for word in words], dtype=np.float64)
    return WordList(canonical_language(language), tuple(words), frequencies)


@functools.lru_cache(maxsize=None)
def content_word_sampler(language: str) -> WordSampler:
    """The ``{@lex}`` slot: content words at their natural frequency."""
    return word_list(language).sampler(exponent=1.0, skip=FUNCTION_WORD_RANKS)


@dataclass(frozen=True)
class WordSequenceGenerator:
    """Random word sequences (text generator ``words``).

    Words are drawn with probability proportional to frequency**`exponent`: 1 is the natural frequency, under
    which a few hundred function words fill half of every sequence; 0.5 flattens the Zipf curve so that a corpus
    of some thousand sentences meets most of the list while common words stay common.
    """

    name: str = "words"
    min_words: int = 3
    max_words: int = 8
    exponent: float = 0.5
    description: str = "random sequences of real words at flattened natural frequencies (wordfreq)"

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(WORDFREQ_CODES)

    def vocabulary(self, language: str) -> frozenset[str]:
        return frozenset(word_list(language).words)

    def __call__(self, rng: np.random.Generator, language: str) -> str:
        count = int(rng.integers(self.min_words, self.max_words + 1))
        return " ".join(_sequence_sampler(language, self.exponent).draw(rng, count))


@functools.lru_cache(maxsize=None)
def _sequence_sampler(language: str, exponent: float) -> WordSampler:
    return word_list(language).sampler(exponent)
