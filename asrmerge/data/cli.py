"""Command-line tools of the corpus: ``asrmerge corpus-defaults`` and ``asrmerge validate-manifest`` (a set of a run is
built by the declared stage ``asrmerge corpus``: asrmerge.workflow.stages). `register` adds them to the main
``asrmerge`` parser."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import yaml

from asrmerge.atomic import write_text
from asrmerge.defaults import default
from asrmerge.guard import declare_paths


logger = logging.getLogger(__name__)

def run_corpus_defaults(args: argparse.Namespace) -> int:
    """``asrmerge corpus-defaults``: write the built-in demo world's specs as YAML."""
    from asrmerge.data.worlds import default_sets

    out = Path(args.out)
    text = yaml.safe_dump({"sets": default_sets()}, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    write_text(out, text)
    logger.info("wrote the default corpus specs to %s", out)
    return 0


def run_validate_manifest(args: argparse.Namespace) -> int:
    """``asrmerge validate-manifest``: check a manifest and its audio, and summarise it."""
    from asrmerge.data.manifest import validate_manifest

    rows = validate_manifest(args.manifest, expected_sample_rate=args.sample_rate, check_audio=not args.no_audio)
    splits = Counter(row.split for row in rows)
    languages = Counter(row.variant or row.language for row in rows)
    hours = sum(row.duration for row in rows) / 3600
    logger.info(
        "%s: OK, %d utterances (%s), languages %s, %.2f h",
        args.manifest, len(rows), ", ".join(f"{split} {count}" for split, count in sorted(splits.items())),
        ", ".join(f"{code} {count}" for code, count in sorted(languages.items())), hours,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``corpus-defaults`` and ``validate-manifest`` to the ``asrmerge`` parser."""
    defaults = subparsers.add_parser(
        "corpus-defaults", help="write the built-in demo world's corpus specs as YAML",
        description="Write default_sets() under a top-level 'sets:' key, as a starting point for config.yaml.",
    )
    defaults.add_argument("--out", type=Path, required=True, help="YAML file to write")
    declare_paths(defaults, outputs=["out"])
    defaults.set_defaults(func=run_corpus_defaults)

    validate = subparsers.add_parser(
        "validate-manifest", help="check a manifest: fields, ids, languages, audio files",
        description="Exit 0 if the manifest and its audio are sound; otherwise name the row and file at fault.",
    )
    validate.add_argument("manifest", type=Path, help="manifest.jsonl to check")
    validate.add_argument("--sample-rate", type=int, default=default("corpus.sample_rate"), help="expected audio sample rate (default %(default)s)")
    validate.add_argument("--no-audio", action="store_true", help="check the rows only, not the audio files")
    validate.set_defaults(func=run_validate_manifest)
