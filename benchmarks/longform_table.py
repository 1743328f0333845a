"""The long-form table of docs/real-whisper.md: real Whisper base on one 60-120 s espeak English recording against
its sentences decoded one by one, from the measurements tests/test_real_whisper.py writes.

    ASRMERGE_LONGFORM_REPORT=longform.json .venv/bin/python -m pytest -q tests/test_real_whisper.py
    .venv/bin/python benchmarks/longform_table.py longform.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(measured: dict) -> str:
    short = measured["short-form"]
    lines = ["| mode | audio (s) | WER (%) | vs short-form (points) | decoding (s) | real-time factor | flagged |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, entry in measured.items():
        delta = "" if mode == "short-form" else f"{100 * (entry['wer'] - short['wer']):+.1f}"
        lines.append(f"| {mode} | {entry['audio_seconds']:.1f} | {100 * entry['wer']:.1f} | {delta} | "
                     f"{entry['seconds']:.1f} | {entry['seconds'] / entry['audio_seconds']:.3f} | {entry['flagged']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurements", type=Path, help="JSON written by tests/test_real_whisper.py")
    print(table(json.loads(parser.parse_args().measurements.read_text())))


if __name__ == "__main__":
    main()
