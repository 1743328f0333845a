"""Hypothesis files: JSON lines with id, language, reference and hypothesis, one per utterance.

Kept apart from decoding so that scoring reads them without importing torch and transformers' model code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from asrmerge.atomic import staged_file


def write_jsonl(rows: Sequence[dict], path: str | Path) -> None:
    """Write rows atomically (asrmerge.atomic): no half-written file is ever left."""
    with staged_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
