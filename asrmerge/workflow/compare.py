"""Two results folders compared file by file: what a code change, another executor or another machine changed.

Every file but the run records is compared (`logs/`, `benchmarks/`: wall clocks and log lines differ between any two
runs; the digest cache of the user's files, which keeps each file's inode and time beside its digest). The folders'
own paths are written as `<results>` first, since metadata and records name absolute inputs, so the same run in two
folders compares equal. SHA-256 digests in JSON records and in safetensors metadata are written as `<sha256>` too:
the digest of a safetensors file changes with the folder its metadata names, and every file a digest stands for
is compared itself. Safetensors files are compared tensor by tensor (dtype, shape, bytes) and by their metadata, not
as files (the writer does not keep the metadata keys in a fixed order); every other file byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from asrmerge import layout

#: Top-level names of a results folder that record how a run went rather than what it computed.
RUN_RECORDS = (layout.LOGS, layout.BENCHMARKS, layout.DIGEST_CACHE)
RESULTS_PLACEHOLDER = "<results>"
_DIGEST = re.compile(r"\b[0-9a-f]{64}\b")


def portable(text: str, root: Path) -> str:
    """`text` with the folder's own path written as <results> and every SHA-256 digest as <sha256>."""
    return _DIGEST.sub("<sha256>", text.replace(str(root), RESULTS_PLACEHOLDER))


@dataclass
class RunComparison:
    identical: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    only_first: list[str] = field(default_factory=list)
    only_second: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.different or self.only_first or self.only_second)

    def report(self) -> list[str]:
        lines = [f"{len(self.identical)} identical file(s), {len(self.different)} different, "
                 f"{len(self.only_first)} only in the first folder, {len(self.only_second)} only in the second"]
        for label, names in (("different", self.different), ("only in the first", self.only_first),
                             ("only in the second", self.only_second)):
            lines += [f"  {label}: {name}" for name in names]
        return lines


def result_files(root: Path) -> list[str]:
    """Paths (relative, sorted) of the files of a results folder, run records left out."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] not in RUN_RECORDS)


def tensors_and_metadata(path: Path, root: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), and its metadata made portable."""
    import torch
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), "pt") as f:
        metadata = {k: portable(v, root) for k, v in (f.metadata() or {}).items()}
        for name in f.keys():
            t = f.get_tensor(name).contiguous()
            tensors[name] = (t.dtype, tuple(t.shape), t.flatten().view(torch.uint8).numpy().tobytes())
    return tensors, metadata


def _content(path: Path, root: Path):
    if path.suffix == ".safetensors":
        return tensors_and_metadata(path, root)
    if path.suffix == ".json":
        return portable(path.read_text(), root)
    return path.read_bytes().replace(str(root).encode(), RESULTS_PLACEHOLDER.encode())


def compare_runs(first: Path, second: Path) -> RunComparison:
    """Compare two results folders (see the module docstring)."""
    for root in (first, second):
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder")
    first, second = first.resolve(), second.resolve()
    names_first, names_second = result_files(first), result_files(second)
    comparison = RunComparison(only_first=sorted(set(names_first) - set(names_second)),
                               only_second=sorted(set(names_second) - set(names_first)))
    for name in sorted(set(names_first) & set(names_second)):
        same = _content(first / name, first) == _content(second / name, second)
        (comparison.identical if same else comparison.different).append(name)
    return comparison
