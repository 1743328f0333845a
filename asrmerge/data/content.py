"""What a manifest's rows hold, checked before any work (asrmerge.data.manifest.validate_manifest: the corpus stage
and `asrmerge validate-manifest` run the same code): a reference that has words once normalised as it will be
scored, audio whose samples are finite and within full scale, a speaking rate a person can reach for the row's
duration, and no recording shared between the training or validation splits and the test split (by content).

Each check returns a message naming what is wrong (None when the row is sound); the caller names the manifest, line
and id.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from asrmerge.data.languages import UNSEGMENTED_LANGUAGES

#: Fastest speech a row may claim: words per second (characters per second for unsegmented languages). Fast read
#: speech reaches 5-6 words/s; beyond these a transcript cannot belong to its audio (a clip cut short, a wrong file).
MAX_WORDS_PER_SECOND = 10.0
MAX_CHARACTERS_PER_SECOND = 25.0
#: Samples beyond full scale: a float file at ±200, a file written without normalisation. A hair of tolerance for
#: float files that round to just above 1.
FULL_SCALE = 1.0 + 1e-4


def scored_words(text: str, language: str) -> list[str]:
    """The reference's words as scoring sees them (its normaliser; characters for unsegmented languages)."""
    from asrmerge.data.normalise import normalizer_for  # transformers' normalisers load with the first check

    normalised = normalizer_for(language)(text)
    if language.split("-")[0] in UNSEGMENTED_LANGUAGES:
        return [c for c in normalised if not c.isspace()]
    return normalised.split()


def _spoken(word: str) -> bool:
    """A word holds a letter or a digit (not only invisible or format characters such as a zero-width space)."""
    return any(unicodedata.category(c)[0] in "LN" for c in word)


def reference_problem(text: str, language: str) -> str | None:
    """A reference with no spoken word left after normalisation ("...", a zero-width space) would count every
    hypothesis word as an insertion against nothing."""
    if not any(_spoken(word) for word in scored_words(text, language)):
        return f"transcript {text!r} has no words once normalised for scoring"
    return None


def speaking_rate_problem(text: str, language: str, seconds: float) -> str | None:
    """More words (characters) per second than anyone speaks: the transcript does not belong to this audio."""
    count = len(scored_words(text, language))
    unsegmented = language.split("-")[0] in UNSEGMENTED_LANGUAGES
    limit, unit = (MAX_CHARACTERS_PER_SECOND, "characters") if unsegmented else (MAX_WORDS_PER_SECOND, "words")
    if seconds <= 0 or count / seconds > limit:
        return (f"{count} {unit} in {seconds:.3f} s of audio ({count / max(seconds, 1e-9):.0f} {unit}/s, more than "
                f"{limit:g}): the transcript does not fit the recording")
    return None


def samples_problem(samples: np.ndarray) -> str | None:
    """Samples that are not finite, or beyond full scale (a float file not normalised to ±1)."""
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        return f"sample {first} is {samples.reshape(-1)[first]} (not a finite number)"
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > FULL_SCALE:
        return f"samples reach {peak:g}, beyond full scale (±1): a float file not normalised, or not audio"
    return None


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the same recording under two names is one recording."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def leakage_problem(rows: Iterable[tuple[str, str, str]]) -> str | None:
    """One recording (by content digest) in a training or validation split and in a test split: the test would score
    what the model was tuned on. `rows`: (digest, split, name of the row) over any number of sets."""
    first: dict[str, dict[str, str]] = {}
    for digest, split, name in rows:
        splits = first.setdefault(digest, {})
        splits.setdefault(split, name)
        tuned = splits.get("train") or splits.get("validation")
        if tuned and "test" in splits:
            return f"the same audio is {tuned} and {splits['test']} (a test recording also used for tuning)"
    return None


def file_digests(files: Iterable[str | Path], cache: str | Path) -> list[str]:
    """The SHA-256 of each file's content (a missing file: a digest of its name, so that the job reading it names
    it). Each is kept in the JSON `cache`, keyed by the file's path, size, inode and modification and change times
    (the change time moves with every write, whatever the modification time is set back to), so unchanged files are
    not read again."""
    from asrmerge.atomic import write_json

    cache = Path(cache)
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    digests, changed = [], False
    for file in map(Path, files):
        if not file.is_file():
            digests.append(hashlib.sha256(f"missing {file}".encode()).hexdigest())
            continue
        stat = file.stat()
        key, stamp = str(file.resolve()), [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
        entry = known.get(key)
        if not entry or entry[:-1] != stamp:
            known[key], changed = [*stamp, file_digest(file)], True
        digests.append(known[key][-1])
    if changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, known)
    return digests


def content_digest(files: Iterable[str | Path], cache: str | Path) -> str:
    """One SHA-256 over the content of `files` (in the order given): what decides whether the work made from them
    reruns (a Snakemake param), so a file replaced in place reruns it and a copied folder does not."""
    return hashlib.sha256("".join(file_digests(files, cache)).encode()).hexdigest()


def manifest_digest(manifest: str | Path, cache: str | Path) -> str:
    """The content digest of a user manifest and every audio file its rows name."""
    from asrmerge.data.manifest import read_manifest

    return content_digest([manifest, *(row.audio for row in read_manifest(manifest))], cache)


def check_splits(manifests: Mapping[str, str | Path], out: str | Path, cache: str | Path) -> Path:
    """The leakage check across every set of a run: no recording (by content) in a training or validation split of
    any set and in a test split of any set. Writes a summary (sets, rows per split, recordings) to `out`; raises
    ValueError naming both rows otherwise."""
    from asrmerge.atomic import write_json
    from asrmerge.data.manifest import read_manifest

    rows = [(name, row) for name, path in manifests.items() for row in read_manifest(path)]
    digests = file_digests([row.audio for _, row in rows], cache)
    problem = leakage_problem((digest, row.split, f"row {row.id} of set {name} ({row.split})")
                              for digest, (name, row) in zip(digests, rows))
    if problem:
        raise ValueError(problem)
    splits: dict[str, dict[str, int]] = {}
    for name, row in rows:
        splits.setdefault(name, {}).setdefault(row.split, 0)
        splits[name][row.split] += 1
    return write_json(out, {"sets": splits, "recordings": len(set(digests))}, indent=1)
