"""WER tables re-aggregated exactly from error counts: per test set, and in the paper's layout.

Group averages follow the paper: the mean of the per-set error rates within a group (ID, OOD, ...), so each test set
weighs the same whatever its length; the EP average weights ID and OOD by their numbers of sets
((n_ID·ID + n_OOD·OOD) / (n_ID + n_OOD), the paper's (10·ID + 5·OOD) / 15). Significance against a reference system
(Full-FT by default) is MAPSSWE over the utterances of the group, pooled across its sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from asrmerge.scoring import counts_from_dict, mapsswe

GROUP_OF_ROLE = {"domain": "ID", "ood": "OOD", "english": "English", "brazilian": "Brazilian", "multilingual": "Multilingual"}
EP_AVERAGE = "EP avg"
ID_FT = "ID-FT (own domain)"
SIGNIFICANCE_LEVEL = 0.05


def load_scores(score_files: Mapping[str, str | Path], roles: Mapping[str, str]) -> pd.DataFrame:
    """Rows of (system, test_set, group, counts, wer, cer) from `scores/{system}.json` files."""
    rows = []
    for system, path in score_files.items():
        for test_set, entry in json.loads(Path(path).read_text()).items():
            counts = counts_from_dict(entry["total"])
            rows.append({
                "system": system, "test_set": test_set, "group": GROUP_OF_ROLE[roles[test_set]],
                **entry["total"], "utterances": len(entry["utterances"]), "wer": counts.wer, "cer": counts.cer,
            })
    return pd.DataFrame(rows)


def load_utterance_errors(score_files: Mapping[str, str | Path]) -> dict[str, dict[str, dict[str, int]]]:
    """system -> test set -> utterance id -> word errors (S + D + I)."""
    errors = {}
    for system, path in score_files.items():
        data = json.loads(Path(path).read_text())
        errors[system] = {
            test_set: {uid: counts_from_dict(c).errors for uid, c in entry["utterances"].items()}
            for test_set, entry in data.items()
        }
    return errors


def group_averages(frame: pd.DataFrame, metric: str = "wer") -> pd.DataFrame:
    """System x group table of mean per-set error rates, groups in canonical order, plus the EP average."""
    table = frame.pivot_table(index="system", columns="group", values=metric, aggfunc="mean", sort=False)
    table = table[[g for g in GROUP_OF_ROLE.values() if g in table.columns]]
    if {"ID", "OOD"} <= set(table.columns):
        n_sets = frame.drop_duplicates("test_set").groupby("group").size()
        weights = n_sets[["ID", "OOD"]]
        table.insert(2, EP_AVERAGE, (table[["ID", "OOD"]] * weights).sum(axis=1) / weights.sum())
    return table


def own_domain_row(frame: pd.DataFrame, metric: str = "wer") -> pd.Series:
    """ID-FT upper bound: each domain's fine-tune on its own domain, averaged over domains (ID column only)."""
    own = frame[(frame.group == "ID") & (frame.system == "finetuned/" + frame.test_set)]
    return pd.Series({"ID": own[metric].mean()}, name=ID_FT)


def group_significance(
    errors: Mapping[str, Mapping[str, Mapping[str, int]]], frame: pd.DataFrame, reference: str
) -> pd.DataFrame:
    """MAPSSWE p-values of every system against `reference`, per group (utterances pooled across the group's sets)."""
    groups = frame.drop_duplicates("test_set").groupby("group", sort=False).test_set.apply(list)
    table = {}
    for system in errors:
        row = {}
        for group, sets in groups.items():
            ids = [(s, uid) for s in sets for uid in errors[reference][s]]
            a = [errors[reference][s][uid] for s, uid in ids]
            b = [errors[system][s][uid] for s, uid in ids]
            testable = system != reference and len(ids) >= 2  # MAPSSWE needs two segments for a variance
            row[group] = mapsswe(a, b).p_value if testable else np.nan
        table[system] = row
    return pd.DataFrame.from_dict(table, orient="index")


def paper_table(frame: pd.DataFrame, errors, reference: str | None = "joint") -> tuple[pd.DataFrame, pd.DataFrame]:
    """WER (%) in the paper's layout and the matching significance p-values (NaN where not tested)."""
    averages = group_averages(frame)
    if (frame.system.str.startswith("finetuned/")).any():
        ft_rows = [s for s in averages.index if s.startswith("finetuned/")]
        position = averages.index.get_loc(ft_rows[0])
        upper = own_domain_row(frame).to_frame().T.reindex(columns=averages.columns)
        averages = pd.concat([averages.iloc[:position], upper, averages.iloc[position:]])
    if reference is None or reference not in errors:
        return averages * 100, pd.DataFrame(np.nan, index=averages.index, columns=averages.columns)
    pvalues = group_significance(errors, frame, reference).reindex(index=averages.index, columns=averages.columns)
    return averages * 100, pvalues


def _marked(table: pd.DataFrame, pvalues: pd.DataFrame, bold: tuple[str, str], dagger: str) -> pd.DataFrame:
    """Text cells: best (lowest) value per column in bold, a dagger where p < 0.05 against the reference."""
    cells = table.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    for column in table.columns:
        best = table[column].min()
        for system in table.index:
            value = table.at[system, column]
            if pd.isna(value):
                continue
            text = cells.at[system, column]
            if np.isclose(value, best):
                text = f"{bold[0]}{text}{bold[1]}"
            if pvalues.at[system, column] < SIGNIFICANCE_LEVEL:
                text += dagger
            cells.at[system, column] = text
    return cells


def write_tables(frame: pd.DataFrame, csv_path: str | Path, markdown_path: str | Path) -> None:
    """The per-test-set table: CSV with every count, Markdown with WER (%)."""
    frame.to_csv(csv_path, index=False, float_format="%.6f")
    per_set = frame.pivot_table(index="system", columns="test_set", values="wer", sort=False) * 100
    per_set = per_set[list(dict.fromkeys(frame.test_set))]
    Path(markdown_path).write_text("WER (%) per test set\n\n" + per_set.round(2).to_markdown() + "\n")


def write_paper_tables(
    table: pd.DataFrame, pvalues: pd.DataFrame, reference: str | None, paths: Sequence[str | Path]
) -> None:
    """CSV (numbers and p-values), Markdown and LaTeX (booktabs) of the paper-layout table."""
    csv_path, markdown_path, latex_path = map(Path, paths)
    combined = table.join(pvalues.add_suffix(" p"), how="left")
    combined.index.name = "system"
    combined.to_csv(csv_path, float_format="%.6f")
    note = (f"Best per column in bold; † = significantly different from {reference} (MAPSSWE, p < {SIGNIFICANCE_LEVEL})."
            if reference else "Best per column in bold.")
    markdown = _marked(table, pvalues, ("**", "**"), " †")
    markdown_path.write_text("WER (%)\n\n" + markdown.to_markdown() + f"\n\n{note}\n")
    latex = _marked(table, pvalues, (r"\textbf{", "}"), r"$^\dagger$")
    latex.index = [s.replace("_", r"\_") for s in latex.index]
    latex.index.name = "system"
    body = latex.to_latex(escape=False, column_format="l" + "r" * len(latex.columns))
    latex_path.write_text(f"% {note}\n% requires \\usepackage{{booktabs}}\n" + body)
