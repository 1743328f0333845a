"""The recipe of an exported merge: what `asrmerge merge --recipe` needs to rebuild the same bytes (method,
parameters, chosen λ, the merge settings, and every input with its SHA-256: base files, task vectors, statistics).

A rebuild takes the workflow's own two steps (the merged task vector, then θ₀ + λ·τ), so its model.safetensors is
the exported one byte for byte on the same machine; an input whose content differs from the recipe's is refused,
naming the file, before any work."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from asrmerge.layout import MERGE_RECIPE

FORMAT = "asrmerge merge recipe 1"


@dataclass(frozen=True)
class Recipe:
    method: str
    params: Mapping[str, Any]
    lam: float
    base: str
    task_vectors: Sequence[str]
    statistics: Sequence[str]
    seed: int
    device: str  # as configured (merge.device: auto takes the GPU when there is one, as the merge job did)
    svd_dtype: str
    exclude_from_svd: Sequence[str]
    #: input path -> SHA-256 of its content (every file of the base folder's weights, each task vector, statistics)
    sha256: Mapping[str, str] = field(default_factory=dict)
    branch: str | None = None

    def inputs(self) -> list[str]:
        return [*self.task_vectors, *self.statistics]


def _sha256(path: str | os.PathLike[str]) -> str:
    from asrmerge.merging.engine import file_sha256

    return file_sha256(path)


def _weight_files(base: str | os.PathLike[str]) -> list[Path]:
    from asrmerge.merging.checkpoint import open_checkpoint

    with open_checkpoint(base) as checkpoint:
        return sorted({Path(file) for file in checkpoint.files.values()})


def make_recipe(*, method: str, params: Mapping[str, Any], lam: float, base: str, task_vectors: Sequence[str],
                statistics: Sequence[str], seed: int, device: str, svd_dtype: str, exclude_from_svd: Sequence[str],
                branch: str | None = None) -> Recipe:
    """A recipe with the SHA-256 of every input read now."""
    files = [*map(str, _weight_files(base)), *map(str, task_vectors), *map(str, statistics)]
    return Recipe(method=method, params=dict(params), lam=float(lam), base=str(base),
                  task_vectors=[str(p) for p in task_vectors], statistics=[str(p) for p in statistics], seed=seed,
                  device=device, svd_dtype=svd_dtype, exclude_from_svd=list(exclude_from_svd),
                  sha256={path: _sha256(path) for path in files}, branch=branch)


def recipe_text(recipe: Recipe) -> str:
    return json.dumps({"format": FORMAT, **asdict(recipe)}, indent=1, ensure_ascii=False) + "\n"


def read_recipe(path: str | os.PathLike[str]) -> Recipe:
    """A recipe file; ValueError naming the file for text that is not JSON, another format or a missing key."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
        raise ValueError(f"{path}: not an asrmerge merge recipe ({FORMAT!r})")
    try:
        return Recipe(**data)
    except TypeError as err:
        raise ValueError(f"{path}: {err}") from None


def check_inputs(recipe: Recipe) -> None:
    """Every input exists and holds what the recipe was made from (ValueError naming the first that does not)."""
    for path, digest in recipe.sha256.items():
        if not Path(path).is_file():
            raise ValueError(f"recipe input {path} does not exist (run from the folder the workflow ran in)")
        if _sha256(path) != digest:
            raise ValueError(f"recipe input {path} has changed since the merge was exported (SHA-256 differs)")
    missing = [str(p) for p in (*map(str, _weight_files(recipe.base)), *recipe.inputs()) if str(p) not in recipe.sha256]
    if missing:
        raise ValueError(f"recipe lists {missing[0]} without its SHA-256")


def engine_settings(seed: int, device: str, svd_dtype: str, exclude_from_svd: Sequence[str]) -> dict[str, Any]:
    """The engine's arguments from the settings as a config or a recipe writes them: the device with `auto`
    resolved here, svd_dtype by name."""
    import torch

    from asrmerge.models.whisper import resolve_device

    return {"seed": seed, "device": str(resolve_device(device)), "svd_dtype": getattr(torch, svd_dtype),
            "exclude_from_svd": tuple(exclude_from_svd)}


def merge_with_settings(base: str, task_vectors: Sequence[str], method: str, params: Mapping[str, Any],
                        statistics: Sequence[str], settings: Mapping[str, Any], out_path: str | os.PathLike[str]) -> Path:
    """A recipe's merged task vector: `settings` as the recipe writes them (seed, device, svd_dtype, exclude_from_svd)."""
    from asrmerge.merging.engine import merge

    return merge(base, task_vectors=list(task_vectors), method=method, params=params, out_path=out_path,
                 statistics=list(statistics), **engine_settings(**settings))


def rebuild(recipe: Recipe, out_model: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """The exported model folder again, from the recipe's inputs, by the workflow's steps (merge, then θ₀ + λ·τ)."""
    from asrmerge.merging.engine import export_merged_model

    check_inputs(recipe)
    settings = {key: getattr(recipe, key) for key in ("seed", "device", "svd_dtype", "exclude_from_svd")}
    with tempfile.TemporaryDirectory(prefix=".rebuild-", dir=Path(out_model).resolve().parent) as scratch:
        task_vector = Path(scratch) / "merged_task_vector.safetensors"
        merge_with_settings(recipe.base, recipe.task_vectors, recipe.method, recipe.params, recipe.statistics,
                            settings, task_vector)
        return export_merged_model(recipe.base, task_vector, recipe.lam, out_model, overwrite=overwrite,
                                   provenance={"branch": recipe.branch, "method": recipe.method,
                                               "params": recipe.params, "rebuilt_from": MERGE_RECIPE},
                                   extra_files={MERGE_RECIPE: recipe_text(recipe)})
