"""Figures of the benchmark, written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from asrmerge.report.tables import group_averages  # noqa: E402


def wer_by_system(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Grouped bars: one group of bars per system, one bar per test group (ID, OOD, English, ...)."""
    averages = group_averages(frame) * 100
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(averages) + 2), 3.6))
    averages.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("WER (%)")
    ax.set_xlabel("")
    ax.set_title("WER by system and test group")
    ax.legend(ncol=len(averages.columns), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
