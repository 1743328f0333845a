"""Text generators: numbers in words, grammar parsing, determinism, vocabularies of the EP domains."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from asrmerge.data.text import (
    EP_DOMAINS,
    TEXT_GENERATORS,
    generate_text,
    get_generator,
    is_transcript_word,
    parse_grammar,
    WORDS_GENERATOR,
)
from asrmerge.data.numbers import number_to_words
from asrmerge.data.wordlists import FUNCTION_WORD_RANKS, VOCABULARY_SIZE, word_list


@pytest.mark.parametrize(
    ("number", "language", "feminine", "expected"),
    [
        (0, "pt", False, "zero"),
        (16, "pt", False, "dezasseis"),
        (16, "pt-BR", False, "dezesseis"),
        (21, "pt", False, "vinte e um"),
        (22, "pt", True, "vinte e duas"),
        (100, "pt", False, "cem"),
        (101, "pt", False, "cento e um"),
        (222, "pt", True, "duzentas e vinte e duas"),
        (1100, "pt", False, "mil e cem"),
        (1250, "pt", False, "mil duzentos e cinquenta"),
        (2005, "pt", False, "dois mil e cinco"),
        (21000, "pt", False, "vinte e um mil"),
        (115, "en", False, "one hundred and fifteen"),
        (2005, "en", False, "two thousand and five"),
        (21, "es", False, "veintiuno"),
        (21000, "es", False, "veintiún mil"),
        (100, "es", False, "cien"),
        (71, "fr", False, "soixante et onze"),
        (80, "fr", False, "quatre vingts"),
        (91, "fr", False, "quatre vingt onze"),
        (200000, "fr", False, "deux cent mille"),
        (23, "it", False, "ventitré"),
        (28, "it", False, "ventotto"),
        (2025, "it", False, "duemilaventicinque"),
        (21, "de", False, "einundzwanzig"),
        (1001, "de", False, "tausendeins"),
        (31000, "de", False, "einunddreißigtausend"),
    ],
)
def test_number_to_words(number: int, language: str, feminine: bool, expected: str) -> None:
    assert number_to_words(number, language, feminine=feminine) == expected


def test_number_to_words_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0..999999"):
        number_to_words(1_000_000, "pt")
    with pytest.raises(ValueError, match="no number speller"):
        number_to_words(3, "ja")
    with pytest.raises(ValueError, match="integer"):
        number_to_words(2.5, "pt")  # type: ignore[arg-type]


def test_every_number_spelling_is_transcript_text() -> None:
    for language in ("pt", "pt-BR", "en", "es", "fr", "it", "de"):
        for number in itertools.chain(range(0, 1200), range(1900, 2100), (21000, 99999, 999999)):
            words = number_to_words(number, language).split()
            assert words and all(is_transcript_word(word) for word in words), (language, number)


def test_generators_are_deterministic_per_seed() -> None:
    for name, generator in TEXT_GENERATORS.items():
        for language in sorted(generator.languages):
            first = [generator(np.random.default_rng(7), language) for _ in range(3)]
            second = [generator(np.random.default_rng(7), language) for _ in range(3)]
            assert first == second, (name, language)
            other = [generate_text(name, np.random.default_rng(s), language) for s in range(20)]
            assert len(set(other)) > 5, (name, language)


def test_sentences_are_lower_case_words_of_the_vocabulary() -> None:
    for name, generator in TEXT_GENERATORS.items():
        for language in sorted(generator.languages):
            vocabulary = generator.vocabulary(language)
            rng = np.random.default_rng(123)
            for _ in range(100):
                sentence = generator(rng, language)
                assert sentence == " ".join(sentence.split())
                for word in sentence.split():
                    assert is_transcript_word(word), (name, language, sentence)
                    assert word in vocabulary, (name, language, word)


def test_numbers_are_spelled_in_words() -> None:
    rng = np.random.default_rng(0)
    sentences = [generate_text(name, rng, "pt") for name in ("addresses", "banking", "weather") for _ in range(60)]
    assert not any(char.isdigit() for sentence in sentences for char in sentence)
    number_words = {"dois", "três", "quatro", "cinco", "vinte", "trinta", "cem", "mil", "zero", "nove"}
    assert sum(any(word in number_words for word in s.split()) for s in sentences) > 30


def test_ep_domains_are_rich_and_distinct() -> None:
    general = get_generator("general").grammar("pt").content_words()
    content = {name: get_generator(name).grammar("pt").content_words() for name in EP_DOMAINS}
    for name in EP_DOMAINS:
        grammar = get_generator(name).grammar("pt")
        others = set().union(*(content[other] for other in EP_DOMAINS if other != name))
        own = content[name] - others - general
        assert len(grammar.templates) >= 8, name
        assert len(own) >= 60, (name, len(own))
    for first, second in itertools.combinations(EP_DOMAINS, 2):
        overlap = len(content[first] & content[second]) / len(content[first] | content[second])
        assert overlap < 0.2, (first, second, overlap)


def test_domain_test_sentences_are_new_but_share_vocabulary_with_train() -> None:
    generator = get_generator("weather")
    train_rng, test_rng = np.random.default_rng(1), np.random.default_rng(2)
    train = {generator(train_rng, "pt") for _ in range(150)}
    test = [generator(test_rng, "pt") for _ in range(40)]
    train_words = {word for sentence in train for word in sentence.split()}
    assert sum(sentence not in train for sentence in test) >= 0.7 * len(test)
    test_tokens = [word for sentence in test for word in sentence.split()]
    assert sum(word in train_words for word in test_tokens) >= 0.9 * len(test_tokens)


def test_general_covers_the_languages_and_brazilian_phrasing() -> None:
    general = get_generator("general")
    assert {"pt", "pt-BR", "en", "es", "fr", "it", "de"} <= general.languages
    brazil = general.grammar("pt-BR").content_words()  # the grammars' own words ({@lex} slots aside)
    portugal = general.grammar("pt").content_words()
    assert {"você", "ônibus", "trem", "celular"} <= brazil
    assert {"autocarro", "comboio", "telemóvel"} <= portugal
    assert not {"você", "ônibus", "celular"} & portugal
    assert "o'clock" in general.grammar("en").content_words()


def test_unknown_generator_and_unsupported_language() -> None:
    with pytest.raises(ValueError, match="unknown text generator 'poetry'"):
        get_generator("poetry")
    with pytest.raises(ValueError, match="does not support language 'en'"):
        generate_text("weather", np.random.default_rng(0), "en")


def test_parse_grammar_tokens_and_errors() -> None:
    grammar = parse_grammar(
        "@templates\no {animal} comeu {#f:2-2} maçãs [hoje]\n@slot animal\ncão\ngato\n",
        name="toy", language="pt",
    )
    sentences = {grammar.generate(np.random.default_rng(seed)) for seed in range(30)}
    assert sentences <= {f"o {a} comeu duas maçãs{h}" for a in ("cão", "gato") for h in ("", " hoje")}
    assert len(sentences) == 4
    with pytest.raises(ValueError, match="slot {bird}"):
        parse_grammar("@templates\no {bird}\n", name="toy", language="pt")
    with pytest.raises(ValueError, match="not a lower-case word"):
        parse_grammar("@templates\nO Gato, dormiu\n", name="toy", language="pt")
    with pytest.raises(ValueError, match="bad number"):
        parse_grammar("@templates\n{#5-2} gatos\n", name="toy", language="pt")
    with pytest.raises(ValueError, match="text before"):
        parse_grammar("gato\n", name="toy", language="pt")


def test_word_lists_are_large_clean_and_frequency_ordered() -> None:
    for language in ("pt", "pt-BR", "en", "es", "fr", "it", "de"):
        words = word_list(language)
        assert len(words.words) == VOCABULARY_SIZE and len(set(words.words)) == VOCABULARY_SIZE
        assert all(is_transcript_word(w) and w.isalpha() for w in words.words), language
        assert np.all(np.diff(words.frequencies) <= 0)  # most frequent first
    assert "frozen" not in word_list("pt").words  # more frequent in English than in Portuguese
    assert {"casa", "hospital", "tribunal"} <= set(word_list("pt").words)


def test_random_word_sequences_follow_the_flattened_frequencies() -> None:
    rng = np.random.default_rng(0)
    sentences = [generate_text("words", rng, "pt") for _ in range(3000)]
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) == WORDS_GENERATOR.min_words and max(lengths) == WORDS_GENERATOR.max_words
    counts = collections.Counter(w for s in sentences for w in s.split())
    words = word_list("pt")
    assert set(counts) <= set(words.words) and len(counts) > 5000  # broad: most of the list within a few thousand
    weights = words.frequencies**WORDS_GENERATOR.exponent
    head, band = slice(0, 10), slice(1000, 2000)
    expected = weights[head].sum() / weights[band].sum()
    observed = sum(counts[w] for w in words.words[head]) / sum(counts[w] for w in words.words[band])
    assert 0.8 * expected < observed < 1.25 * expected
    assert [generate_text("words", np.random.default_rng(5), "en") for _ in range(2)] == [
        generate_text("words", np.random.default_rng(5), "en") for _ in range(2)
    ]


def test_lexicon_slot_draws_content_words() -> None:
    grammar = parse_grammar("@templates\nthe word {@lex} again\n", name="t", language="en")
    rng = np.random.default_rng(1)
    drawn = [grammar.generate(rng).split()[2] for _ in range(500)]
    content = set(word_list("en").words[FUNCTION_WORD_RANKS:])
    assert set(drawn) <= content and len(set(drawn)) > 200
    assert content <= grammar.vocabulary() and "@lex" not in grammar.vocabulary()
    closed = TEXT_GENERATORS["general"].grammar("pt").content_words()
    open_words = set(word_list("pt").words[FUNCTION_WORD_RANKS:]) - closed
    general = [generate_text("general", rng, "pt") for _ in range(400)]
    assert sum(bool(set(s.split()) & open_words) for s in general) > 40  # open-vocabulary slots
