"""Tests of asrmerge.evaluation.scoring: normalisation, error counts, re-aggregation and paired significance tests."""

from __future__ import annotations

import json
import math

import pytest

from asrmerge.data.normalise import normalizer_for
from asrmerge.evaluation.scoring import (
    ErrorCounts,
    SignificanceResult,
    align_by_id,
    count_errors,
    counts_from_dict,
    counts_to_dict,
    mapsswe,
    paired_bootstrap,
    paired_bootstrap_interval,
    score_hypotheses,
)


# --- normalisation ---------------------------------------------------------------------------------------------------


def test_english_normaliser_handles_contractions_and_numbers() -> None:
    en = normalizer_for("en")
    assert en("I'm twenty-five years old.") == "i am 25 years old"
    assert en("I am 25 years old") == "i am 25 years old"
    # Region subtags select the same normaliser.
    assert normalizer_for("en-US")("It's 3 o'clock") == en("It's 3 o'clock")


def test_basic_normaliser_for_portuguese_keeps_diacritics() -> None:
    pt = normalizer_for("pt")
    assert pt("Ação, é rápida!") == "ação é rápida"
    assert normalizer_for("pt-BR")("Ação, é rápida!") == "ação é rápida"
    # The English normaliser strips diacritics; the basic one does not expand contractions.
    assert normalizer_for("en")("Ação") == "acao"
    assert pt("I'm") == "i m"


def test_normaliser_choice_changes_the_counts() -> None:
    # English: both sides normalise to "i am 25 years old" → no error.
    assert count_errors("I'm twenty-five years old.", "I am 25 years old", "en").errors == 0
    # Portuguese (basic normaliser): "i m twenty five years old" vs "i am 25 years old":
    # i=i, m→am (S), twenty→25 (S), five (D), years=years, old=old → S=2, D=1, I=0 over 6 words.
    pt = count_errors("I'm twenty-five years old.", "I am 25 years old", "pt")
    assert (pt.substitutions, pt.deletions, pt.insertions, pt.reference_words) == (2, 1, 0, 6)
    # Diacritics kept in Portuguese: "ação" vs "acao" is one word substitution and two character substitutions
    # (a=a, ç→c, ã→a, o=o); the English normaliser removes the diacritics, so no error.
    c = count_errors("ação", "acao", "pt")
    assert (c.wer, c.char_substitutions, c.reference_chars, c.cer) == (1.0, 2, 4, 0.5)
    assert count_errors("ação", "acao", "en").errors == 0


# --- error counts ----------------------------------------------------------------------------------------------------


def test_word_counts_hand_aligned() -> None:
    # Normalised reference: "hoje o gato preto dorme na cama" (7 words)
    # hypothesis:           "hoje gato branco dorme na cama quente"
    #   hoje = hoje
    #   o    → (deleted)            D
    #   gato = gato
    #   preto → branco              S
    #   dorme = dorme, na = na, cama = cama
    #   (inserted) quente           I
    # S=1, D=1, I=1 → WER = 3/7.
    c = count_errors("Hoje, o gato preto dorme na cama.", "hoje gato branco dorme na cama quente", "pt")
    assert (c.substitutions, c.deletions, c.insertions, c.reference_words) == (1, 1, 1, 7)
    assert c.hits == 5
    assert c.wer == pytest.approx(3 / 7)


def test_character_counts_hand_aligned() -> None:
    # Characters (spaces count): reference "o gato" = o ␣ g a t o (6); hypothesis "o gata s" = o ␣ g a t a ␣ s (8).
    #   o ␣ g a t equal; o → a (S); ␣ inserted (I); s inserted (I)  → S=1, D=0, I=2 → CER = 3/6.
    # Words: o = o; gato → gata (S); s inserted (I) → WER = 2/2.
    c = count_errors("o gato", "o gata s", "pt")
    assert (c.char_substitutions, c.char_deletions, c.char_insertions, c.reference_chars) == (1, 0, 2, 6)
    assert c.cer == pytest.approx(0.5)
    assert c.char_hits == 5
    assert (c.substitutions, c.insertions, c.reference_words) == (1, 1, 2)
    assert c.wer == pytest.approx(1.0)


def test_punctuation_does_not_add_characters() -> None:
    # "rápida!" normalises to "rápida" without a trailing space: identical texts, 6 reference characters.
    c = count_errors("rápida!", "rápida", "pt")
    assert (c.char_errors, c.reference_chars) == (0, 6)


def test_empty_reference_rates() -> None:
    assert count_errors("", "", "pt").wer == 0.0
    only_insertions = count_errors("...", "olá", "pt")
    assert (only_insertions.insertions, only_insertions.reference_words) == (1, 0)
    assert math.isinf(only_insertions.wer) and math.isinf(only_insertions.cer)
    assert count_errors("olá", "", "pt").deletions == 1


def test_counts_reaggregate_exactly_and_corpus_wer_is_not_mean_wer() -> None:
    rows = [
        # 1 reference word, 1 substitution → utterance WER 1.0
        {"id": "u1", "reference": "sim", "hypothesis": "não", "language": "pt"},
        # 9 reference words, no error → utterance WER 0.0
        {"id": "u2", "reference": "um dois três quatro cinco seis sete oito nove",
         "hypothesis": "um dois três quatro cinco seis sete oito nove", "language": "pt"},
        {"id": "u3", "reference": "I'm here", "hypothesis": "I am there", "language": "en"},
    ]
    total, per_utt = score_hypotheses(rows)
    assert len(per_utt) == 3
    assert sum(per_utt) == total
    assert per_utt[0] + per_utt[1] + per_utt[2] == total
    # Re-aggregating any subset from the per-utterance counts is exact.
    first_two = per_utt[0] + per_utt[1]
    assert first_two.wer == pytest.approx(1 / 10)
    assert first_two.wer != pytest.approx((per_utt[0].wer + per_utt[1].wer) / 2)  # mean of WERs = 0.5
    # u3 in English: "i am here" vs "i am there" → 1 substitution over 3 words.
    assert (per_utt[2].substitutions, per_utt[2].reference_words) == (1, 3)
    assert total.wer == pytest.approx(2 / 13)


def test_score_hypotheses_rejects_bad_rows() -> None:
    with pytest.raises(KeyError, match="hypothesis"):
        score_hypotheses([{"id": "a", "reference": "x", "language": "pt"}])
    row = {"id": "a", "reference": "x", "hypothesis": "x", "language": "pt"}
    with pytest.raises(ValueError, match="duplicate"):
        score_hypotheses([row, row])


def test_counts_dict_round_trip_through_json() -> None:
    counts = count_errors("o gato preto", "o gato branco", "pt")
    data = json.loads(json.dumps(counts_to_dict(counts)))
    assert counts_from_dict(data) == counts
    assert counts_from_dict({**data, "wer": counts.wer}) == counts
    with pytest.raises(ValueError, match="unknown"):
        counts_from_dict({**data, "hits_total": 3})
    with pytest.raises(ValueError, match="lack"):
        counts_from_dict({k: v for k, v in data.items() if k != "insertions"})
    with pytest.raises(ValueError):
        ErrorCounts(substitutions=3, reference_words=2)


# --- significance ----------------------------------------------------------------------------------------------------


def test_mapsswe_matches_hand_computed_statistic() -> None:
    a = [3, 2, 4, 1, 5]
    b = [1, 2, 2, 0, 3]
    # Differences Z = [2, 0, 2, 1, 2]; mean = 7/5 = 1.4; squared deviations 0.36, 1.96, 0.36, 0.16, 0.36 sum to 3.2;
    # variance = 3.2 / 4 = 0.8; σ/√n = √(0.8/5) = 0.4; W = 1.4 / 0.4 = 3.5; p = 2(1 − Φ(3.5)) = 4.6526e-4.
    result = mapsswe(a, b)
    assert isinstance(result, SignificanceResult)
    assert result.n == 5
    assert result.mean_difference == pytest.approx(1.4)
    assert result.statistic == pytest.approx(3.5)
    assert result.p_value == pytest.approx(4.6526e-4, rel=1e-4)
    swapped = mapsswe(b, a)
    assert swapped.statistic == pytest.approx(-3.5) and swapped.p_value == pytest.approx(result.p_value)


def test_mapsswe_identical_systems_and_zero_variance() -> None:
    same = mapsswe([1, 0, 2], [1, 0, 2])
    assert (same.statistic, same.p_value, same.mean_difference) == (0.0, 1.0, 0.0)
    constant = mapsswe([2, 3, 4], [1, 2, 3])  # every difference is 1: σ̂ = 0, μ̂ ≠ 0
    assert constant.statistic == math.inf and constant.p_value == 0.0
    with pytest.raises(ValueError):
        mapsswe([1], [0])
    with pytest.raises(ValueError):
        mapsswe([1, 2], [1])


def test_paired_bootstrap_is_deterministic_for_a_seed() -> None:
    errors_a = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    errors_b = [2, 1, 3, 2, 4, 7, 2, 5, 5, 2]
    lengths = [10, 8, 12, 7, 15, 20, 9, 14, 11, 10]
    p1 = paired_bootstrap(errors_a, errors_b, lengths, n_resamples=500, seed=7)
    p2 = paired_bootstrap(errors_a, errors_b, lengths, n_resamples=500, seed=7)
    assert p1 == p2
    assert 0.9 < p1 <= 1.0  # B has fewer errors on 7 of 10 utterances and more on one
    low, high = paired_bootstrap_interval(errors_a, errors_b, lengths, n_resamples=500, seed=7)
    assert low <= high and high > 0
    assert paired_bootstrap(errors_a, errors_a, lengths, n_resamples=200, seed=0) == 0.0  # ties never count
    assert paired_bootstrap(errors_b, errors_a, lengths, n_resamples=500, seed=7) < 0.1


def test_align_by_id_pairs_rows_and_names_missing_ids() -> None:
    a = [{"id": "x", "reference": "r1"}, {"id": "y", "reference": "r2"}]
    b = [{"id": "y", "reference": "r2"}, {"id": "x", "reference": "r1"}]
    aligned_a, aligned_b = align_by_id(a, b)
    assert [r["id"] for r in aligned_a] == [r["id"] for r in aligned_b] == ["x", "y"]
    with pytest.raises(ValueError, match="'y'"):
        align_by_id(a, b[1:])
    with pytest.raises(ValueError, match="'z'"):
        align_by_id(a, b + [{"id": "z", "reference": "r3"}])
    with pytest.raises(ValueError, match="different references"):
        align_by_id(a, [{"id": "y", "reference": "r2"}, {"id": "x", "reference": "other"}])


def test_hypothesis_files_round_trip_without_leftovers(tmp_path) -> None:
    from asrmerge.evaluation.hypotheses import read_jsonl, write_jsonl

    rows = [{"id": "a", "language": "pt", "reference": "pão com manteiga", "hypothesis": "pão com"},
            {"id": "b", "language": "en", "reference": "hello", "hypothesis": ""}]
    path = tmp_path / "sub" / "set.jsonl"
    write_jsonl(rows, path)
    assert read_jsonl(path) == rows
    assert "pão" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert sorted(p.name for p in path.parent.iterdir()) == ["set.jsonl"]
