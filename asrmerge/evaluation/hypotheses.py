"""Hypothesis files: JSON lines with id, language, reference, hypothesis and flags, one per utterance.

`flags` lists why a hypothesis is not a complete transcript as far as decoding can tell (FLAGS): it stopped at the
token cap before end-of-text, or it repeats one stretch over and over (a decoding loop). Scores count them per set and
tables mark them: a cut or looping hypothesis is never passed off as a transcript. Kept apart from decoding so that
scoring reads them without importing torch and transformers' model code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Sequence

from asrmerge.atomic import staged_file

TOKEN_CAP = "token_cap"  # decoding reached the token cap (asrmerge.models.whisper.token_cap) before end-of-text
REPETITION = "repetition"  # the text repeats one stretch back to back (REPEATS times or more, LOOP_CHARS or longer)
FLAGS = (TOKEN_CAP, REPETITION)
REPEATS = 4
LOOP_CHARS = 20
_REPEATED_STRETCH = re.compile(r"(.{1,60}?)\1{%d,}" % (REPEATS - 1), re.DOTALL)


def repeats_itself(text: str) -> bool:
    """Whether `text` holds a stretch of 1-60 characters repeated back to back REPEATS times or more, covering at
    least LOOP_CHARS characters ("!!!!...", "e depois e depois e depois e depois"): what a decoder caught in a loop
    writes, and speech hardly ever says."""
    return any(len(match.group(0)) >= LOOP_CHARS for match in _REPEATED_STRETCH.finditer(text))


def hypothesis_flags(text: str, reached_cap: bool) -> list[str]:
    """The flags (FLAGS) of one hypothesis, in FLAGS order."""
    return [flag for flag, raised in ((TOKEN_CAP, reached_cap), (REPETITION, repeats_itself(text))) if raised]


def flag_counts(rows: Iterable[Mapping]) -> dict[str, int]:
    """How many rows carry each flag (every flag of FLAGS, zero included)."""
    rows = list(rows)
    return {flag: sum(flag in row.get("flags", ()) for row in rows) for flag in FLAGS}


def write_jsonl(rows: Sequence[dict], path: str | Path) -> None:
    """Write rows atomically (asrmerge.atomic): no half-written file is ever left."""
    with staged_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
