"""Streaming safetensors I/O: lazy tensor-by-tensor reading of checkpoints and an atomic tensor-by-tensor writer.

A checkpoint is a transformers folder (model.safetensors, or shards listed in model.safetensors.index.json, plus
config.json) or a single .safetensors file. Its headers are parsed once; floating-point tensors are then read
either with `os.preadv` straight into a caller's buffer (`Checkpoint.read_into`: whole tensors or any contiguous
range of their flattened entries, converted to the buffer's dtype), or as zero-copy tensors over a private memory
map (`Checkpoint.view`, whose pages `Checkpoint.release` unmaps again once used), so peak memory stays near the size
of the tensors in use. Other tensors go through `safetensors.safe_open`.

safetensors has no streaming writer, so `SafetensorsWriter` writes the format itself: 8-byte little-endian header
length, JSON header (dtype, shape, data_offsets per tensor, optional string metadata), raw little-endian bytes. All
offsets are computed up front from the declared shapes and dtypes; tensors are then written in declaration order into
a temporary file in the destination folder, which replaces the destination only when every tensor was written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import mmap
import os
import queue
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping, Sequence

import torch
from safetensors import safe_open

from asrmerge import layout
from asrmerge.atomic import FILE_MODE

#: Stretches of each tensor's bytes that its checkpoint's fingerprint reads (Checkpoint.fingerprint), and their size.
FINGERPRINT_SAMPLES = 8
FINGERPRINT_BYTES = 4096
#: Metadata keys of the content fingerprints an artefact records of its origins: the base it is relative to, and the
#: fine-tuned model it was made from (a task vector; a model's statistics record it as `model_fingerprint`).
BASE_FINGERPRINT = "base_fingerprint"
FINETUNED_FINGERPRINT = "finetuned_fingerprint"
MODEL_FINGERPRINT = "model_fingerprint"
#: Statistics of all tasks in one file (AdaMerging's coefficients): the fine-tunes of its rows, in order (JSON list).
TASK_FINGERPRINTS = "task_fingerprints"

log = logging.getLogger(__name__)

WEIGHTS_NAME = layout.MODEL_WEIGHTS
INDEX_NAME = layout.MODEL_WEIGHTS_INDEX
CONFIG_NAME = layout.MODEL_CONFIG

DTYPE_TO_ST: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
ST_TO_DTYPE = {v: k for k, v in DTYPE_TO_ST.items()}
ELEMENT_SIZES = {dtype: torch.empty((), dtype=dtype).element_size() for dtype in DTYPE_TO_ST}
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)

if sys.byteorder != "little":  # raw bytes are written as in memory; safetensors is little-endian
    raise ImportError("asrmerge.merging.checkpoint needs a little-endian machine")


@dataclass
class Checkpoint:
    """Lazy view of a safetensors checkpoint.

    Attributes:
        path: the folder or file given.
        files: tensor name → the .safetensors file holding it.
        shapes / dtypes: per tensor, read from the headers only.
        model_type: config.json's model_type for a folder, else None.
        metadata: the string metadata of the (first) file.
    """

    path: Path
    files: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    model_type: str | None
    metadata: dict[str, str]
    offsets: dict[str, int] = field(default_factory=dict, repr=False)
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)
    _fds: dict[Path, int] = field(default_factory=dict, repr=False)
    _maps: dict[Path, mmap.mmap] = field(default_factory=dict, repr=False)
    _done: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)
    _scratch: torch.Tensor | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        """All tensor names in storage order (`storage_order`): a stable iteration order, and the order in which
        a file of these tensors keeps every one aligned."""
        return storage_order(self.files, self.dtypes)

    @property
    def float_names(self) -> list[str]:
        """Names of floating-point tensors (the ones that have task vectors)."""
        return [n for n in self.names if self.dtypes[n] in FLOAT_DTYPES]

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    @functools.cached_property
    def fingerprint(self) -> str:
        """A content fingerprint of the weights: SHA-256 over every tensor's name, dtype and shape and FINGERPRINT_SAMPLES
        stretches of its bytes (start, evenly spaced, end). Independent of file layout (shards, metadata); two
        trainings of one architecture differ in it with certainty, and reading it costs a few reads per tensor, not a
        pass over the weights. Artefacts record the fingerprints of what they were made from (BASE_FINGERPRINT,
        FINETUNED_FINGERPRINT, MODEL_FINGERPRINT, TASK_FINGERPRINTS)."""
        digest = hashlib.sha256()
        by_file: dict[Path, list[str]] = {}
        for name in sorted(self.files):
            by_file.setdefault(self.files[name], []).append(name)
        samples = {}
        for file, names in by_file.items():
            with open(file, "rb") as handle:
                for name in names:
                    size = self.numel(name) * self.dtypes[name].itemsize
                    starts = sorted({min(size, max(0, size - FINGERPRINT_BYTES) * k // (FINGERPRINT_SAMPLES - 1))
                                     for k in range(FINGERPRINT_SAMPLES)})
                    chunks = []
                    for start in starts:
                        handle.seek(self.offsets[name] + start)
                        chunks.append(handle.read(min(FINGERPRINT_BYTES, size - start)))
                    samples[name] = b"".join(chunks)
        for name in sorted(samples):
            digest.update(f"{name}|{self.dtypes[name]}|{list(self.shapes[name])}|".encode())
            digest.update(samples[name])
        return digest.hexdigest()

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (its stored dtype, CPU)."""
        file = self.files[name]
        handle = self._handles.get(file)
        if handle is None:
            handle = safe_open(str(file), framework="pt", device="cpu")
            self._handles[file] = handle
        return handle.get_tensor(name)

    def get_float(self, name: str, check_finite: bool = True) -> torch.Tensor:
        """Read one tensor as float32; NaN/Inf raise ValueError naming the tensor and file."""
        tensor = torch.empty(self.shapes[name], dtype=torch.float32)
        self.read_into(name, tensor.view(-1))
        if check_finite:
            self.check_finite(name, tensor)
        return tensor

    def check_finite(self, name: str, tensor: torch.Tensor) -> None:
        """Raise ValueError naming the tensor and file unless every entry of `tensor` (read from `name`) is finite."""
        if not all_finite(tensor):
            raise ValueError(f"tensor {name!r} in {self.files[name]} contains NaN or Inf")

    def read_into(self, name: str, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Read entries [start, start + out.numel()) of the flattened tensor `name` into `out` and return `out`.

        `out` is a contiguous CPU tensor of any floating dtype; values are converted from the stored dtype (no
        intermediate copy when the dtypes agree). The bytes come from `os.preadv`, so no file position is shared and
        the page cache is read once.
        """
        stored = self.dtypes[name]
        count = out.numel()
        if not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"read_into({name!r}): the destination must be a contiguous CPU tensor")
        if start < 0 or start + count > self.numel(name):
            raise ValueError(f"read_into({name!r}): range [{start}, {start + count}) outside {self.numel(name)} entries")
        if count == 0:
            return out
        size = ELEMENT_SIZES[stored]
        position = self.offsets[name] + start * size
        if out.dtype == stored:
            _pread_exact(self._fd(name), out.view(-1).view(torch.uint8), position)
            return out
        nbytes = count * size
        if self._scratch is None or self._scratch.numel() < nbytes:
            self._scratch = torch.empty(nbytes, dtype=torch.uint8)
        raw = self._scratch[:nbytes]
        _pread_exact(self._fd(name), raw, position)
        out.view(-1).copy_(raw.view(stored))
        return out

    def view(self, name: str, start: int = 0, count: int | None = None) -> torch.Tensor:
        """Entries [start, start + count) of the flattened tensor `name`, in its stored dtype, as a tensor over a
        private memory map of the file: no copy is made until the values are used (reading them faults the page
        cache's pages in); writes stay private to this process."""
        numel = self.numel(name)
        count = numel - start if count is None else count
        if start < 0 or count < 0 or start + count > numel:
            raise ValueError(f"view({name!r}): range [{start}, {start + count}) outside {numel} entries")
        stored = self.dtypes[name]
        if count == 0:
            return torch.empty(0, dtype=stored)
        file = self.files[name]
        mapped = self._maps.get(file)
        if mapped is None:
            mapped = self._maps[file] = mmap.mmap(self._fd(name), 0, access=mmap.ACCESS_COPY)
        return torch.frombuffer(mapped, dtype=stored, count=count, offset=self.offsets[name] + start * ELEMENT_SIZES[stored])

    #: `release` unmaps in batches of at least this many bytes per file (fewer, larger madvise calls).
    RELEASE_BYTES = 32 << 20

    def release(self, name: str, start: int = 0, count: int | None = None) -> None:
        """Done with entries [start, start + count) of `name`: once RELEASE_BYTES of a file are done, drop this
        process's mapping of their pages (madvise DONTNEED), so that viewed pages do not pile up in its resident
        memory; a later view faults them in again from the page cache. The page holding the end of a range is
        kept (the next range may share it)."""
        file = self.files[name]
        mapped = self._maps.get(file)
        if mapped is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        size = ELEMENT_SIZES[self.dtypes[name]]
        count = self.numel(name) - start if count is None else count
        first = (self.offsets[name] + start * size) // mmap.PAGESIZE * mmap.PAGESIZE
        last = (self.offsets[name] + (start + count) * size) // mmap.PAGESIZE * mmap.PAGESIZE
        low, high = self._done.get(file, (first, first))
        if first != high:  # not contiguous with the pending range: flush that one first
            self._unmap(mapped, low, high)
            low = first
        if last - low >= self.RELEASE_BYTES:
            self._unmap(mapped, low, last)
            low = last
        self._done[file] = (low, max(last, low))

    @staticmethod
    def _unmap(mapped: mmap.mmap, first: int, last: int) -> None:
        if last > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)

    def _fd(self, name: str) -> int:
        file = self.files[name]
        fd = self._fds.get(file)
        if fd is None:
            fd = os.open(file, os.O_RDONLY)
            self._fds[file] = fd
        return fd

    def close(self) -> None:
        self._handles.clear()
        for mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:  # a view is still alive: the map closes when it is collected
                pass
        self._maps.clear()
        self._done.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._scratch = None

    def __del__(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN or ±Inf.

    Fast path: one reduction, the sum (NaN and Inf propagate into it); only when the sum is not finite (a bad entry,
    or a sum that overflowed) are the entries themselves tested."""
    if tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum(dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32))):
        return True
    return bool(torch.isfinite(tensor).all())


def _pread_exact(fd: int, buffer: torch.Tensor, position: int) -> None:
    """Fill the uint8 tensor `buffer` from `fd` at `position` (several preadv calls if the kernel returns less)."""
    view = memoryview(buffer.numpy()).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], position + done)
        if got <= 0:
            raise ValueError(f"unexpected end of file (fd {fd}) at byte {position + done}")
        done += got


def _read_header(file: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """(tensor entries, string metadata, byte offset of the data section) of a safetensors file."""
    with open(file, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{file} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw_len)
        if length > 100_000_000:
            raise ValueError(f"{file} is not a safetensors file (header length {length})")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is not a safetensors file ({err})") from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + length


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({folder / f for f in weight_map.values()})
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} or {INDEX_NAME} (found {len(found)} .safetensors files)")


def read_model_type(folder: Path) -> str | None:
    config = folder / CONFIG_NAME
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"{config}: invalid JSON ({err})") from None


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a transformers folder (single or sharded safetensors) or a single .safetensors file, lazily."""
    path = Path(path)
    if path.is_dir():
        files = _weight_files(path)
        model_type = read_model_type(path)
    elif path.is_file():
        files, model_type = [path], None
    else:
        raise FileNotFoundError(f"checkpoint not found: {path}")
    names: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    offsets: dict[str, int] = {}
    metadata: dict[str, str] = {}
    for i, file in enumerate(files):
        header, meta, data_start = _read_header(file)
        if i == 0:
            metadata = meta
        for name, info in header.items():
            if name in names:
                raise ValueError(f"tensor {name!r} appears in both {names[name]} and {file}")
            if info["dtype"] not in ST_TO_DTYPE:
                raise ValueError(f"tensor {name!r} in {file}: unsupported dtype {info['dtype']}")
            names[name] = file
            shapes[name] = tuple(info["shape"])
            dtypes[name] = ST_TO_DTYPE[info["dtype"]]
            offsets[name] = data_start + int(info["data_offsets"][0])
    wide = [name for name, dtype in dtypes.items() if dtype == torch.float64]
    if wide:  # task vectors and merges are computed in float32: say so rather than drop the last bits unannounced
        log.warning("%s: %d float64 tensor(s) (e.g. %s) are read in float32, the engine's working precision; task "
                    "vectors and merged models keep float32 precision", path, len(wide), wide[0])
    return Checkpoint(path=path, files=names, shapes=shapes, dtypes=dtypes, model_type=model_type, metadata=metadata,
                      offsets=offsets)


def check_compatible(base: Checkpoint, other: Checkpoint, names: Sequence[str] | None = None) -> None:
    """Raise ValueError unless `other` has the same tensors (names and shapes) as `base` (or as `names` of it)
    and, for folders, the same config.json model_type. The message names the first offending key and file, and the
    base `other` was made against when its metadata records one (a task vector's `base`)."""
    made_from = other.metadata.get("base")
    hint = f"; {other.path} was made against the base {made_from}: give that one" if made_from else ""
    recorded = other.metadata.get(BASE_FINGERPRINT)
    if recorded and recorded != base.fingerprint:
        raise ValueError(f"{other.path} was made from another base ({made_from or 'recorded by fingerprint'}) than "
                         f"{base.path}: its weights differ; give the base it was made from")
    if base.model_type is not None and other.model_type is not None and base.model_type != other.model_type:
        raise ValueError(
            f"{other.path}: model_type {other.model_type!r} differs from the base's {base.model_type!r} ({base.path})"
        )
    wanted = list(names) if names is not None else base.names
    for name in wanted:
        if name not in other.files:
            raise ValueError(f"{other.path}: tensor {name!r} of the base ({base.files[name]}) is missing{hint}")
        if other.shapes[name] != base.shapes[name]:
            raise ValueError(
                f"tensor {name!r} in {other.files[name]} has shape {list(other.shapes[name])}, "
                f"the base ({base.files[name]}) has {list(base.shapes[name])}{hint}"
            )
    extra = sorted(set(other.files) - set(wanted))
    if extra:
        raise ValueError(f"tensor {extra[0]!r} in {other.files[extra[0]]} is not among the base's tensors ({base.path})"
                         f"{hint}")


# ------------------------------------------------------------------------------------------------------------ writer


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ELEMENT_SIZES[self.dtype]


def storage_order(names: Iterable[str], dtypes: Mapping[str, torch.dtype]) -> list[str]:
    """Names ordered as safetensors stores tensors: larger element size first, then by name. Written in this
    order, every tensor starts at a multiple of its element size (an aligned view for a memory map)."""
    return sorted(names, key=lambda name: (-dtypes[name].itemsize, name))


def build_header(entries: Sequence[TensorEntry], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialized safetensors header (length prefix included), padded with spaces to a multiple of 8 bytes.
    Entries must come in an aligned order (`storage_order`): a misaligned tensor is refused."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for entry in entries:
        if entry.dtype not in DTYPE_TO_ST:
            raise ValueError(f"tensor {entry.name!r}: dtype {entry.dtype} cannot be stored")
        if offset % entry.dtype.itemsize:
            raise ValueError(f"tensor {entry.name!r} ({entry.dtype}) would start at byte {offset}, not a multiple of "
                             f"its element size: write the tensors in storage_order")
        header[entry.name] = {"dtype": DTYPE_TO_ST[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, atomically.

    Usage::

        with SafetensorsWriter(path, entries, metadata) as writer:
            for entry in entries:
                writer.write(entry.name, tensor)

    Tensors must be written in the order of `entries`, with the declared dtype and shape (`write`), or in consecutive
    parts of the declared dtype (`write_part`, for merges streamed in slices of a tensor). The data goes to a
    temporary file in the destination folder that replaces `path` (os.replace) only after the last tensor; on any
    error the temporary file is removed and `path` is left untouched.

    background=True: the write system calls run in a thread of their own (at most `BACKGROUND_BYTES` queued), so
    that the caller computes the next tensor meanwhile; the writer then holds on to each tensor given until it is
    written, and the caller must not modify it.
    """

    #: Bytes queued at most for the background thread.
    BACKGROUND_BYTES = 64 << 20
    #: The background thread flushes the file to disk (fdatasync) every this many bytes, so that the final fsync,
    #: which the caller waits for, has little left to do.
    SYNC_BYTES = 128 << 20

    def __init__(self, path: str | os.PathLike[str], entries: Sequence[TensorEntry], metadata: Mapping[str, str] | None = None,
                 background: bool = False):
        self.path = Path(path)
        self.entries = list(entries)
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.path}: duplicate tensor names")
        self.metadata = dict(metadata or {})
        self._next = 0
        self._filled = 0  # bytes of entries[_next] written so far (write_part)
        self._fh: Any = None
        self._tmp: Path | None = None
        self._background = background
        self._queue: queue.SimpleQueue[torch.Tensor | None] = queue.SimpleQueue()
        self._space = threading.Condition()
        self._queued = 0
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "SafetensorsWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(build_header(self.entries, self.metadata))
        if self._background:
            self._thread = threading.Thread(target=self._drain, name=f"write {self.path.name}", daemon=True)
            self._thread.start()
        return self

    def _drain(self) -> None:
        unsynced = 0
        while (data := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self._fh.write(memoryview(data.numpy()))
                    unsynced += data.numel()
                    if unsynced >= self.SYNC_BYTES:
                        self._fh.flush()
                        os.fdatasync(self._fh.fileno())
                        unsynced = 0
            except BaseException as err:  # noqa: BLE001 (re-raised in the caller by the next write or by __exit__)
                self._error = err
            with self._space:
                self._queued -= data.numel()
                self._space.notify()

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the whole tensor `name` (the next declared one), with its declared dtype and shape."""
        entry = self._expect(name)
        if self._filled:
            raise ValueError(f"{self.path}: tensor {name!r} was partly written with write_part")
        if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
            raise ValueError(
                f"{self.path}: tensor {name!r} is {tensor.dtype} {list(tensor.shape)}, declared {entry.dtype} {list(entry.shape)}"
            )
        self._append(entry, tensor)

    def write_part(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next consecutive entries (any shape, flattened in C order) of tensor `name`; the tensor counts as
        written once all its declared entries have been appended."""
        entry = self._expect(name)
        if tensor.dtype != entry.dtype:
            raise ValueError(f"{self.path}: tensor {name!r} part is {tensor.dtype}, declared {entry.dtype}")
        if self._filled + tensor.numel() * tensor.element_size() > entry.nbytes:
            raise ValueError(f"{self.path}: tensor {name!r}: parts exceed the declared shape {list(entry.shape)}")
        self._append(entry, tensor)

    def _expect(self, name: str) -> TensorEntry:
        if self._next >= len(self.entries):
            raise ValueError(f"{self.path}: more tensors written than declared ({name!r})")
        entry = self.entries[self._next]
        if name != entry.name:
            raise ValueError(f"{self.path}: expected tensor {entry.name!r} next, got {name!r}")
        return entry

    def _append(self, entry: TensorEntry, tensor: torch.Tensor) -> None:
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        if data.numel() and self._thread is not None:
            with self._space:
                while self._queued and self._queued + data.numel() > self.BACKGROUND_BYTES and self._error is None:
                    self._space.wait()
                self._queued += data.numel()
            if self._error is not None:
                raise self._error
            self._queue.put(data)
        elif data.numel():
            self._fh.write(memoryview(data.numpy()))
        self._filled += data.numel()
        if self._filled == entry.nbytes:
            self._next += 1
            self._filled = 0

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._fh is not None and self._tmp is not None
        try:
            self._stop()
            if self._error is not None and exc_type is None:
                raise self._error
            if exc_type is None and self._next != len(self.entries):
                missing = self.entries[self._next].name
                raise ValueError(f"{self.path}: tensor {missing!r} was declared but never written")
            self._fh.flush()
            if exc_type is None:
                os.fsync(self._fh.fileno())
            self._fh.close()
            if exc_type is None:
                os.chmod(self._tmp, FILE_MODE)
                os.replace(self._tmp, self.path)
                log.debug("wrote %s (%d tensors)", self.path, len(self.entries))
        finally:
            # A full disk can make close() fail again here; the temporary file must go all the same.
            with contextlib.suppress(OSError):
                self._fh.close()
            self._tmp.unlink(missing_ok=True)


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write an in-memory mapping with `SafetensorsWriter` (small files, tests), in storage order."""
    by_name = dict(tensors.items() if isinstance(tensors, Mapping) else tensors)
    items = [(n, by_name[n]) for n in storage_order(by_name, {n: t.dtype for n, t in by_name.items()})]
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in items]
    with SafetensorsWriter(path, entries, metadata) as writer:
        for name, tensor in items:
            writer.write(name, tensor)
    return Path(path)
