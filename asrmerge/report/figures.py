"""Figures of the benchmark, each written as PNG and PDF at a size readable in a two-column paper."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from asrmerge.report.tables import group_averages  # noqa: E402

COLUMN_WIDTH = 3.4  # inches, one column of a two-column paper
FULL_WIDTH = 7.0


def _save(fig, paths) -> None:
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=200)
    plt.close(fig)


def short_name(system: str) -> str:
    """`merged/ties/density=0.2` -> `ties (density=0.2)`; other systems keep their name."""
    if system.startswith("merged/"):
        _, method, params = system.split("/", 2)
        return method if params == "default" else f"{method} ({params})"
    return system


def wer_by_system(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Grouped bars: one group per system, one bar per test group (ID, OOD, English, ...)."""
    averages = group_averages(frame) * 100
    averages.index = [short_name(s) for s in averages.index]
    fig, ax = plt.subplots(figsize=(max(FULL_WIDTH * 0.6, 0.55 * len(averages) + 2), 3.2))
    averages.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("WER (%)")
    ax.set_title("WER by system and test group", fontsize=10)
    ax.legend(ncol=min(len(averages.columns), 6), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right", fontsize=7)
    _save(fig, paths)


def id_vs_ood(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Trade-off scatter: in-domain against out-of-domain WER, one point per system."""
    averages = group_averages(frame) * 100
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.3, COLUMN_WIDTH))
    for system, row in averages.iterrows():
        family = system.split("/")[0]
        marker = {"merged": "o", "finetuned": "^"}.get(family, "s")
        ax.scatter(row["ID"], row.get("OOD", float("nan")), marker=marker, s=22)
        ax.annotate(short_name(system), (row["ID"], row.get("OOD", float("nan"))), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("in-domain WER (%)")
    ax.set_ylabel("out-of-domain WER (%)")
    ax.grid(alpha=0.3)
    _save(fig, paths)


def lambda_curves(selections: Mapping[str, str | Path], *paths: str | Path) -> None:
    """Validation WER against lambda for every merge, the chosen lambda marked."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.5, COLUMN_WIDTH))
    for branch_id, path in selections.items():
        data = json.loads(Path(path).read_text())
        lambdas = [p["lambda"] for p in data["curve"]]
        wers = [100 * p["wer"] for p in data["curve"]]
        (line,) = ax.plot(lambdas, wers, marker=".", label=short_name("merged/" + branch_id), linewidth=1)
        chosen = data["chosen_lambda"]
        ax.scatter([chosen], [wers[lambdas.index(chosen)]], color=line.get_color(), s=40, zorder=3, facecolors="none")
    ax.set_xlabel("λ")
    ax.set_ylabel("validation WER (%)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    _save(fig, paths)


def heatmap(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Method x test set WER heatmap."""
    table = frame.pivot_table(index="system", columns="test_set", values="wer", sort=False) * 100
    table = table[list(dict.fromkeys(frame.test_set))]
    fig, ax = plt.subplots(figsize=(max(FULL_WIDTH * 0.6, 0.45 * table.shape[1] + 2), 0.28 * table.shape[0] + 1.5))
    image = ax.imshow(table.values, aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), [short_name(s) for s in table.index], fontsize=7)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table.values[i, j]:.0f}", ha="center", va="center", fontsize=5, color="white")
    fig.colorbar(image, ax=ax, label="WER (%)")
    _save(fig, paths)


TABLE_FIGURES = {"wer_by_system": wer_by_system, "id_vs_ood": id_vs_ood, "heatmap": heatmap}
SELECTION_FIGURES = {"lambda_curves": lambda_curves}
