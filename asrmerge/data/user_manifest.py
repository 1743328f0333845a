"""User-provided sets: a manifest is validated and copied into the results folder under the set's name, or a Hugging
Face dataset is read into one (asrmerge.data.hf_dataset)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asrmerge.data.manifest import validate_manifest, write_manifest
from asrmerge.defaults import default

logger = logging.getLogger(__name__)

#: Where a user set's rows come from, one key each: a JSONL manifest, or a Hugging Face dataset.
USER_SET_SOURCES = ("manifest", "dataset")


def user_set_sources(spec: Mapping[str, Any]) -> list[str]:
    """The source keys a set's entry gives (none for a generated set; more than one is a config error)."""
    return [key for key in USER_SET_SOURCES if key in spec]


def import_manifest(
    source: str | os.PathLike[str], set_name: str, out_path: str | os.PathLike[str], sample_rate: int = default("corpus.sample_rate")
) -> Path:
    """Validate `source` (rows and audio) and write it to `out_path` with absolute audio paths and `set` = set_name;
    a row whose own `set` differs keeps it as `source_set` (and the log says so)."""
    rows = validate_manifest(source, expected_sample_rate=sample_rate, check_audio=True)
    renamed = [
        row if row.set == set_name else dataclasses.replace(row, set=set_name, extra={**row.extra, "source_set": row.set})
        for row in rows
    ]
    others = sorted({row.set for row in rows} - {set_name})
    if others:
        logger.info("%s: rows of set(s) %s are imported as set %s (their own name kept as source_set)",
                    source, ", ".join(others), set_name)
    logger.info("%s: %d utterances imported as set %s", source, len(rows), set_name)
    return write_manifest(out_path, renamed)


def import_user_set(name: str, spec: Mapping[str, Any], out_path: str | os.PathLike[str],
                    sample_rate: int = default("corpus.sample_rate")) -> Path:
    """A user set (`manifest:` or `dataset:`) as the set's manifest at `out_path` (rule corpus_set, `asrmerge
    corpus`)."""
    if "dataset" in spec:
        from asrmerge.data.hf_dataset import DatasetSource, materialise

        return materialise(DatasetSource.from_spec(spec["role"], spec["dataset"]), name, out_path, sample_rate)
    return import_manifest(spec["manifest"], name, out_path, sample_rate)
