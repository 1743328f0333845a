"""Command-line entry points of the corpus builder: ``asrmerge corpus``, ``asrmerge corpus-defaults`` and
``asrmerge validate-manifest``. `register` adds them to the main ``asrmerge`` parser."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from asrmerge.layout import MANIFEST_NAME
from asrmerge.atomic import write_text
from asrmerge.defaults import default
from asrmerge.guard import declare_paths


logger = logging.getLogger(__name__)

# Where a YAML document may keep its set specs, tried in order: config.yaml may nest them.
_SPEC_LOCATIONS: tuple[tuple[str, ...], ...] = (("corpus", "sets"), ("corpus",), ("sets",), ())


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a YAML document and return its set specs (name -> spec).

    The specs may sit at the top level or under ``sets:``, ``corpus:`` or ``corpus: sets:``; each needs a
    ``role`` or an ``extends`` (see asrmerge.data.corpus). A workflow config with ``corpus.world`` gives its world's
    sets as the workflow sees them.
    """
    spec_path = Path(path)
    if not spec_path.is_file():
        raise FileNotFoundError(f"spec file {spec_path} does not exist")
    try:
        document = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"spec file {spec_path} is not valid YAML: {err}") from None
    if not isinstance(document, Mapping):
        raise ValueError(f"spec file {spec_path}: expected a mapping of set names to specs")
    if isinstance(document.get("corpus"), Mapping) and document["corpus"].get("world"):
        from asrmerge.data.worlds import expand_world  # the audio stack loads only for the corpus commands

        expand_world(document)  # a workflow config: its world's sets, sized and overridden
    for location in _SPEC_LOCATIONS:
        node: Any = document
        for key in location:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node and all(
            isinstance(v, Mapping) and ("role" in v or "extends" in v) for v in node.values()
        ):
            return dict(node)
    raise ValueError(
        f"spec file {spec_path}: no set specs found (looked at the top level and under 'sets', 'corpus', "
        f"'corpus.sets'; every spec needs a 'role' or 'extends')"
    )


def select_spec(specs: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    """The spec of set ``name``; ValueError listing the available sets otherwise."""
    if name not in specs:
        raise ValueError(f"set {name!r} is not in {source} (sets: {', '.join(sorted(specs))})")
    return specs[name]


def run_corpus(args: argparse.Namespace) -> int:
    """``asrmerge corpus``: build one set."""
    from asrmerge.data.corpus import build_set  # the audio stack loads only for these commands
    from asrmerge.data.worlds import default_sets
    from asrmerge.data.recordings import build_recordings, is_recordings_spec, parse_recordings_spec
    from asrmerge.data.user_manifest import import_user_set, user_set_sources

    if args.spec is None:
        specs, source = default_sets(), "the built-in demo world"
    else:
        specs, source = load_spec_file(args.spec), str(args.spec)
    spec = select_spec(specs, args.set_name, source)
    if user_set_sources(spec):
        manifest = import_user_set(args.set_name, spec, Path(args.out) / MANIFEST_NAME, args.sample_rate)
    elif is_recordings_spec(spec):
        if args.recordings_source is None:
            raise ValueError(f"set {args.set_name!r} joins the test utterances of set {spec['recordings_of']!r} into "
                             f"long recordings: give --recordings-source, the manifest of {spec['recordings_of']!r}")
        manifest = build_recordings(args.set_name, parse_recordings_spec(args.set_name, spec, specs),
                                    args.recordings_source, args.out, seed=args.seed, sample_rate=args.sample_rate)
    else:
        manifest = build_set(args.set_name, spec, args.out, seed=args.seed, sample_rate=args.sample_rate)
    logger.info("wrote %s", manifest)
    return 0


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
    """Add ``corpus``, ``corpus-defaults`` and ``validate-manifest`` to the ``asrmerge`` parser."""
    corpus = subparsers.add_parser(
        "corpus", help="synthesise one speech set (espeak-ng + channel effects) with its manifest (rule corpus_set)",
        description="Build audio/<split>/<id>.wav and manifest.jsonl for one set of a corpus spec; a long-form set "
                    "(recordings_of) joins the test utterances of --recordings-source into recordings.",
    )
    corpus.add_argument("--spec", type=Path, default=None,
                        help="YAML with set specs (top level, 'sets:', 'corpus:' or 'corpus: sets:'); "
                             "default: the built-in demo world")
    corpus.add_argument("--set", dest="set_name", required=True, help="name of the set to build")
    corpus.add_argument("--out", type=Path, required=True, help="output folder for the set")
    corpus.add_argument("--seed", type=int, default=default("seed"), help="base random seed (default %(default)s)")
    corpus.add_argument("--sample-rate", type=int, default=default("corpus.sample_rate"), help="output sample rate in Hz (default %(default)s)")
    corpus.add_argument("--recordings-source", type=Path, default=None, metavar="MANIFEST",
                        help="for a long-form set (recordings_of): the built manifest of the set whose test "
                             "utterances it joins")
    declare_paths(corpus, inputs=["spec", "recordings_source"], folders=["out"])
    corpus.set_defaults(func=run_corpus)

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
