"""Reading a CTranslate2 `model.bin`: its named arrays and aliases, as numpy (asrmerge.models.ct2_import converts them).

`model.bin` layout (binary version 6, little endian; see CTranslate2 `python/ctranslate2/specs/model_spec.py`
`ModelSpec._serialize` and `src/models/model.cc` `Model::load`):

    u32 binary_version
    str spec_name, u32 spec_revision                      (binary_version >= 2)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank],
        u8 dtype_id, u32 n_bytes                          (binary_version >= 4; before: u8 item_size, u32 n_items)
        n_bytes of raw row-major data
    u32 n_aliases, then per alias: str alias, str target  (binary_version >= 3)

where `str` is a u16 length (counting a trailing NUL), the UTF-8 bytes and the NUL, and dtype ids are
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_BINARY_VERSION = 6
WHISPER_SPEC_NAME = "WhisperSpec"

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as raw uint16 bits.
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16_ID = 5
# Binary versions < 4 store an item size instead of a dtype id.
_LEGACY_ITEM_SIZES: dict[int, int] = {4: 0, 2: 2, 1: 1}


class _Reader:
    """Sequential little-endian reader over a bytes buffer with bounds checks."""

    def __init__(self, buffer: bytes | memoryview, path: Path) -> None:
        self.buffer = buffer
        self.offset = 0
        self.path = path

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if size < 0 or end > len(self.buffer):
            raise ValueError(f"{self.path} is truncated or corrupt (needs {size} bytes at offset {self.offset})")
        view = memoryview(self.buffer)[self.offset : end]
        self.offset = end
        return view

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return int(value)

    def string(self) -> str:
        length = self.unpack("H")
        raw = bytes(self.take(length))
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: malformed string at offset {self.offset - length}")
        return raw[:-1].decode("utf-8")


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 (exact: bfloat16 is the top half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_ct2_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 `model.bin` with numpy only.

    Returns `(spec_name, variables, aliases)`: variables maps names to arrays (0-d arrays for scalars; bfloat16
    data widened to float32), aliases maps an alias name to the variable it shares. Binary versions 1–6 are read.
    Raises FileNotFoundError for a missing file and ValueError for an unsupported version or a corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CTranslate2 model file at {path}")
    reader = _Reader(path.read_bytes(), path)
    version = reader.unpack("I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ValueError(f"{path}: unsupported CTranslate2 binary version {version} (reads 1 to {MAX_BINARY_VERSION})")
    spec_name, revision = "", 1
    if version >= 2:
        spec_name = reader.string()
        revision = reader.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        rank = reader.unpack("B")
        shape = tuple(reader.unpack("I") for _ in range(rank))
        if version >= 4:
            dtype_id = reader.unpack("B")
            n_bytes = reader.unpack("I")
        else:
            item_size = reader.unpack("B")
            if item_size not in _LEGACY_ITEM_SIZES:
                raise ValueError(f"{path}: variable {name!r} has unknown item size {item_size}")
            dtype_id = _LEGACY_ITEM_SIZES[item_size]
            n_bytes = reader.unpack("I") * item_size
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise ValueError(f"{path}: variable {name!r} has {n_bytes} bytes, shape {shape} needs {expected}")
        array = np.frombuffer(reader.take(n_bytes), dtype=dtype).reshape(shape).copy()
        if dtype_id == _BFLOAT16_ID:
            array = bfloat16_bits_to_float32(array)
        if name in variables:
            raise ValueError(f"{path}: variable {name!r} appears twice")
        variables[name] = array
    aliases: dict[str, str] = {}
    if version >= 3:
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    if reader.offset != len(reader.buffer):
        raise ValueError(f"{path}: {len(reader.buffer) - reader.offset} unexpected trailing bytes")
    log.info("read %s: %s revision %d, binary v%d, %d variables, %d aliases",
             path, spec_name or "(unnamed spec)", revision, version, len(variables), len(aliases))
    return spec_name, variables, aliases


def resolve_aliases(variables: Mapping[str, np.ndarray], aliases: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Variables with every alias resolved to the array it names (chains of aliases are followed)."""
    resolved = dict(variables)
    for alias in aliases:
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in variables:
            if target in seen:
                raise ValueError(f"alias cycle through {target!r}")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise ValueError(f"alias {alias!r} names the missing variable {target!r}")
        resolved[alias] = variables[target]
    return resolved
