"""Scoring: word/character error counts of normalised transcripts and paired significance tests.

Counts, not rates, are the unit of record: every utterance keeps its substitution, deletion and insertion counts
(words and characters) so that any table can re-aggregate exactly (corpus WER = total errors / total reference
words, which is not the mean of utterance WERs), and the paired tests below use the per-utterance errors.

Normalisation (asrmerge.data.normalise) follows Whisper's evaluation: English and other languages apart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import jiwer
import numpy as np
from scipy.stats import norm

from asrmerge.data.normalise import normalizer_for
from asrmerge.defaults import default

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Error counts
# ---------------------------------------------------------------------------------------------------------------------


def _rate(errors: int, reference_length: int) -> float:
    """errors / reference_length; with an empty reference: 0.0 without errors, +inf with any (insertions only)."""
    if reference_length == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / reference_length


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts of words and characters against a reference; add them to aggregate.

    Rates (`wer`, `cer`) are derived: total errors over total reference length. With a zero reference length the
    rate is 0.0 when there are no errors and +inf otherwise (every hypothesis token is an insertion).
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0
    char_substitutions: int = 0
    char_deletions: int = 0
    char_insertions: int = 0
    reference_chars: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ErrorCounts.{f.name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, f.name, int(value))
        if self.substitutions + self.deletions > self.reference_words:
            raise ValueError("substitutions + deletions exceed the number of reference words")
        if self.char_substitutions + self.char_deletions > self.reference_chars:
            raise ValueError("character substitutions + deletions exceed the number of reference characters")

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        return ErrorCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __radd__(self, other: object) -> ErrorCounts:
        # sum() starts from the integer 0.
        if other == 0:
            return self
        return NotImplemented

    @property
    def hits(self) -> int:
        """Reference words recognised correctly."""
        return self.reference_words - self.substitutions - self.deletions

    @property
    def char_hits(self) -> int:
        """Reference characters recognised correctly."""
        return self.reference_chars - self.char_substitutions - self.char_deletions

    @property
    def errors(self) -> int:
        """Word errors: substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def char_errors(self) -> int:
        """Character errors: substitutions + deletions + insertions."""
        return self.char_substitutions + self.char_deletions + self.char_insertions

    @property
    def wer(self) -> float:
        """Word error rate (see the class docstring for an empty reference)."""
        return _rate(self.errors, self.reference_words)

    @property
    def cer(self) -> float:
        """Character error rate (spaces between words count as characters, as in jiwer's CER)."""
        return _rate(self.char_errors, self.reference_chars)


def count_errors(reference: str, hypothesis: str, language: str) -> ErrorCounts:
    """Word and character edit counts of `hypothesis` against `reference`, both normalised for `language`.

    Words come from `jiwer.process_words` on the normalised texts, characters from `jiwer.process_characters` on
    the same normalised texts (single spaces between words, counted as characters).
    """
    normalise = normalizer_for(language)
    ref, hyp = normalise(reference), normalise(hypothesis)
    words = jiwer.process_words(ref, hyp)
    chars = jiwer.process_characters(ref, hyp)
    return ErrorCounts(
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        reference_words=words.hits + words.substitutions + words.deletions,
        char_substitutions=chars.substitutions,
        char_deletions=chars.deletions,
        char_insertions=chars.insertions,
        reference_chars=chars.hits + chars.substitutions + chars.deletions,
    )


_ROW_KEYS = ("id", "reference", "hypothesis", "language")


def score_hypotheses(rows: Iterable[Mapping[str, Any]]) -> tuple[ErrorCounts, list[ErrorCounts]]:
    """Corpus total and per-utterance counts (in input order) for rows with id, reference, hypothesis, language."""
    per_utterance: list[ErrorCounts] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        missing = [key for key in _ROW_KEYS if key not in row]
        if missing:
            raise KeyError(f"row {i} has no {missing[0]!r} field")
        utt_id = str(row["id"])
        if utt_id in seen:
            raise ValueError(f"duplicate utterance id {utt_id!r}")
        seen.add(utt_id)
        per_utterance.append(count_errors(row["reference"], row["hypothesis"] or "", row["language"]))
    total = sum(per_utterance, ErrorCounts())
    log.debug("scored %d utterances: WER %.4f CER %.4f", len(per_utterance), total.wer, total.cer)
    return total, per_utterance


def counts_to_dict(counts: ErrorCounts) -> dict[str, int]:
    """The eight counts as a JSON-ready dict (rates are derived, not stored)."""
    return asdict(counts)


def counts_from_dict(data: Mapping[str, Any]) -> ErrorCounts:
    """Inverse of `counts_to_dict`; derived keys `wer`/`cer` are ignored, unknown or missing keys are errors."""
    names = [f.name for f in fields(ErrorCounts)]
    unknown = sorted(set(data) - set(names) - {"wer", "cer"})
    if unknown:
        raise ValueError(f"unknown error-count field {unknown[0]!r}")
    missing = [name for name in names if name not in data]
    if missing:
        raise ValueError(f"error counts lack field {missing[0]!r}")
    return ErrorCounts(**{name: data[name] for name in names})


# ---------------------------------------------------------------------------------------------------------------------
# Paired significance tests
# ---------------------------------------------------------------------------------------------------------------------


def align_by_id(
    rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Pair two systems' rows on the same test set by `id`, in the order of `rows_a`.

    Raises ValueError when an id appears twice within one system, when the id sets differ (naming the first id,
    in input order, that one side lacks), or when both rows of a pair carry different references.
    """

    def index(rows: Iterable[Mapping[str, Any]], name: str) -> dict[str, Mapping[str, Any]]:
        by_id: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            utt_id = str(row["id"])
            if utt_id in by_id:
                raise ValueError(f"system {name} has utterance id {utt_id!r} twice")
            by_id[utt_id] = row
        return by_id

    a, b = index(rows_a, "A"), index(rows_b, "B")
    for utt_id in a:
        if utt_id not in b:
            raise ValueError(f"utterance id {utt_id!r} of system A is missing from system B")
    for utt_id in b:
        if utt_id not in a:
            raise ValueError(f"utterance id {utt_id!r} of system B is missing from system A")
    for utt_id, row in a.items():
        other = b[utt_id]
        if "reference" in row and "reference" in other and row["reference"] != other["reference"]:
            raise ValueError(f"utterance {utt_id!r} has different references in the two systems")
    return list(a.values()), [b[utt_id] for utt_id in a]


@dataclass(frozen=True)
class SignificanceResult:
    """A paired test of system A against system B; `mean_difference` = mean(errors_a − errors_b) > 0 favours B."""

    statistic: float
    p_value: float
    mean_difference: float
    n: int


def _paired_arrays(errors_a: Sequence[int], errors_b: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(errors_a, dtype=np.float64)
    b = np.asarray(errors_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired tests need two equal-length 1-D sequences, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired tests need at least one utterance")
    return a, b


def mapsswe(errors_a: Sequence[int], errors_b: Sequence[int]) -> SignificanceResult:
    """Matched-pairs sentence-segment word error test (Gillick & Cox 1989; NIST sctk MAPSSWE), segments = utterances.

    With Z_i = errors_a[i] − errors_b[i] over n aligned utterances, μ̂ = mean(Z_i), σ̂² = Σ(Z_i − μ̂)² / (n − 1),
    the statistic W = μ̂ / (σ̂ / √n) is compared with the standard normal distribution: p = 2 (1 − Φ(|W|)).
    σ̂ = 0 means every difference equals μ̂: W = 0, p = 1 if μ̂ = 0 (identical error counts), else W = ±inf, p = 0.
    Needs n ≥ 2 (σ̂ is undefined for one utterance).
    """
    a, b = _paired_arrays(errors_a, errors_b)
    n = int(a.size)
    if n < 2:
        raise ValueError("MAPSSWE needs at least two utterances to estimate the variance")
    diff = a - b
    mean = float(diff.mean())
    sigma = float(diff.std(ddof=1))
    if sigma == 0.0:
        if mean == 0.0:
            return SignificanceResult(statistic=0.0, p_value=1.0, mean_difference=0.0, n=n)
        return SignificanceResult(statistic=math.copysign(math.inf, mean), p_value=0.0, mean_difference=mean, n=n)
    statistic = mean / (sigma / math.sqrt(n))
    p_value = float(2.0 * norm.sf(abs(statistic)))
    return SignificanceResult(statistic=statistic, p_value=min(1.0, p_value), mean_difference=mean, n=n)


# Resamples drawn per numpy call; fixed so that a seed gives the same draws whatever n_resamples is.
_BOOTSTRAP_CHUNK = 64


def bootstrap_wer_differences(
    errors_a: Sequence[int], errors_b: Sequence[int], ref_lengths: Sequence[int], n_resamples: int = 1000, seed: int = default("seed")
) -> np.ndarray:
    """WER(A) − WER(B) on `n_resamples` bootstrap resamples of the utterances (with replacement).

    Draws come from `numpy.random.default_rng(seed)` only. A resample whose references are all empty gets a
    difference of 0.
    """
    a, b = _paired_arrays(errors_a, errors_b)
    lengths = np.asarray(ref_lengths, dtype=np.float64)
    if lengths.shape != a.shape:
        raise ValueError(f"ref_lengths has shape {lengths.shape}, errors have {a.shape}")
    if (lengths < 0).any():
        raise ValueError("reference lengths must be non-negative")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    rng = np.random.default_rng(seed)
    n = a.size
    diff = a - b
    deltas = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(_BOOTSTRAP_CHUNK, n))[:size]
        error_diff = diff[idx].sum(axis=1)
        total_len = lengths[idx].sum(axis=1)
        deltas[start : start + size] = np.divide(
            error_diff, total_len, out=np.zeros(size, dtype=np.float64), where=total_len > 0
        )
    return deltas


def paired_bootstrap(
    errors_a: Sequence[int], errors_b: Sequence[int], ref_lengths: Sequence[int], n_resamples: int = 1000, seed: int = default("seed")
) -> float:
    """Bootstrap probability of improvement (Bisani & Ney 2004): the share of resamples where B's WER < A's WER.

    Ties count as no improvement; values near 1 favour B, near 0 favour A, 0.5 means no preference.
    """
    deltas = bootstrap_wer_differences(errors_a, errors_b, ref_lengths, n_resamples=n_resamples, seed=seed)
    return float(np.mean(deltas > 0.0))


def paired_bootstrap_interval(
    errors_a: Sequence[int],
    errors_b: Sequence[int],
    ref_lengths: Sequence[int],
    n_resamples: int = 1000,
    seed: int = default("seed"),
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of WER(A) − WER(B) (same resamples as `paired_bootstrap` for the same seed)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    deltas = bootstrap_wer_differences(errors_a, errors_b, ref_lengths, n_resamples=n_resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    return float(low), float(high)
