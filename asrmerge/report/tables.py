"""Error-rate tables re-aggregated exactly from error counts: per test set, and in the seed paper's layout.

Rows: Zero-shot (the base model), Full-FT (joint fine-tune), ID-FT (own domain: every domain scored by its own
fine-tune, the per-domain upper bound), then every merge at the λ chosen on validation, family by family.
Columns of the paper layout: EP ID, EP OOD, EP avg, English, PT-BR, Multilingual avg (the groups the config has).

Every test set is scored by its corpus error rate (total errors / total reference length) — WER, or CER for sets in
unsegmented languages (Chinese, Japanese, Thai, ...; as FLEURS is scored). A group column is the mean of its sets'
rates, so each test set weighs the same whatever its length; the EP average weights ID and OOD by their numbers of
sets, (n_ID·ID + n_OOD·OOD) / (n_ID + n_OOD) — the paper's (10·ID + 5·OOD) / 15. Significance against a reference
system (Full-FT) is MAPSSWE over the utterances of the group pooled across its sets (per set in the per-set table).
Outputs: CSV (numbers and p-values), Markdown, LaTeX (booktabs) and HTML (for the Snakemake report); best value per
column in bold, † where p < 0.05.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from asrmerge.atomic import write_text
from asrmerge.data.languages import UNSEGMENTED_LANGUAGES
from asrmerge.layout import BASE, JOINT, MERGED, finetuned_system, is_finetuned, split_system
from asrmerge.report.naming import (
    OWN_DOMAIN, chosen_lambda, ordered_systems, system_family, system_label,
)
from asrmerge.evaluation.hypotheses import FLAGS
from asrmerge.evaluation.scoring import counts_from_dict, mapsswe

#: Test-set role (config) -> group (a column of the paper layout); general_test = general speech in the main language.
GROUP_OF_ROLE = {"domain": "ID", "ood": "OOD", "general_test": "EP general", "words_test": "EP words",
                 "long_form": "Long-form", "accented": "Accented", "english": "English", "brazilian": "Brazilian",
                 "multilingual": "Multilingual"}
EP_AVERAGE = "EP avg"
GROUP_ORDER = ("ID", "OOD", EP_AVERAGE, "EP general", "EP words", "Long-form", "Accented", "English", "Brazilian",
               "Multilingual")
#: Column headings of the paper-layout table.
COLUMN_NAMES = {"ID": "EP ID", "OOD": "EP OOD", EP_AVERAGE: "EP avg", "EP general": "EP general", "EP words": "EP words",
                "Long-form": "EP long-form", "Accented": "PT accented", "English": "English", "Brazilian": "PT-BR",
                "Multilingual": "Multilingual avg"}
#: Column-group headings of the per-set table.
SET_GROUP_NAMES = {"ID": "EP in-domain", "OOD": "EP out-of-domain", "EP general": "EP general", "EP words": "EP words",
                   "Long-form": "EP long-form", "Accented": "accented Portuguese", "English": "English", "Brazilian": "PT-BR",
                   "Multilingual": "multilingual"}
ID_FT = "ID-FT (own domain)"
SIGNIFICANCE_LEVEL = 0.05
REFERENCE_LABEL = {JOINT: "Full-FT", BASE: "Zero-shot"}


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------


def cer_sets(manifests: Mapping[str, str | Path], metrics: Mapping[str, str] | None = None) -> list[str]:
    """Sets scored by CER: those whose config says so (`metrics`: set -> wer | cer, the sets' `metric` key), else
    those whose test utterances are all in unsegmented languages, from `data/{set}/manifest.jsonl`."""
    metrics = metrics or {}
    chosen = []
    for name, path in manifests.items():
        if name in metrics:
            chosen += [name] if metrics[name] == "cer" else []
            continue
        languages = set()
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("split") == "test":
                    languages.add(str(row.get("language", "")).split("-")[0].lower())
        if languages and languages <= UNSEGMENTED_LANGUAGES:
            chosen.append(name)
    return chosen


def system_catalog(systems: Iterable[str], selections: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """One row per system, in table order: label (with the chosen λ), short_label (without), family, lambda.

    `selections`: branch id ("ties/density=0.2") -> the record of `selection/{branch}.json`.
    """
    selections = selections or {}
    rows = {}
    for system in systems:
        kind, method, params = split_system(system)
        record = selections.get(f"{method}/{params}") if kind == MERGED else None
        lam = chosen_lambda(record) if record is not None else None
        rows[system] = {"label": system_label(system, lam), "short_label": system_label(system),
                        "family": system_family(system), "lambda": lam}
    catalog = pd.DataFrame.from_dict(rows, orient="index")
    return catalog.loc[ordered_systems(catalog.index, catalog.family.to_dict())] if len(catalog) else catalog


def load_scores(
    score_files: Mapping[str, str | Path], roles: Mapping[str, str], cer_sets: Iterable[str] = (),
    catalog: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows of (system, label, family, test_set, group, metric, counts, wer, cer, error_rate) from `scores/{system}.json`.

    Systems come in `catalog` order (default: system_catalog of the score files, without λ); `error_rate` is the
    set's metric (CER for `cer_sets`, else WER).
    """
    cer_sets = set(cer_sets)
    if catalog is None:
        catalog = system_catalog(score_files)
    rows = []
    for system in [s for s in catalog.index if s in score_files]:
        for test_set, entry in json.loads(Path(score_files[system]).read_text()).items():
            counts = counts_from_dict(entry["total"])
            metric = "cer" if test_set in cer_sets else "wer"
            rows.append({
                "system": system, "label": catalog.at[system, "label"], "short_label": catalog.at[system, "short_label"],
                "family": catalog.at[system, "family"], "test_set": test_set,
                "group": GROUP_OF_ROLE.get(roles[test_set], roles[test_set]),
                "metric": metric, **entry["total"], "utterances": len(entry["utterances"]),
                **{f"flagged_{flag}": entry.get("flagged", {}).get(flag, 0) for flag in FLAGS},
                "wer": counts.wer, "cer": counts.cer, "error_rate": counts.cer if metric == "cer" else counts.wer,
            })
    frame = pd.DataFrame(rows)
    group_rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    sets = frame.drop_duplicates("test_set")
    by_group = sets.sort_values("group", key=lambda g: g.map(lambda x: group_rank.get(x, len(group_rank))), kind="stable")
    set_rank = {s: i for i, s in enumerate(by_group.test_set)}
    system_rank = {s: i for i, s in enumerate(catalog.index)}
    frame = frame.assign(_system=frame.system.map(system_rank), _set=frame.test_set.map(set_rank))
    return frame.sort_values(["_system", "_set"]).drop(columns=["_system", "_set"]).reset_index(drop=True)


def load_utterance_errors(
    score_files: Mapping[str, str | Path], cer_sets: Iterable[str] = ()
) -> dict[str, dict[str, dict[str, int]]]:
    """system -> test set -> utterance id -> errors (S + D + I of words; of characters for `cer_sets`)."""
    cer_sets = set(cer_sets)
    errors = {}
    for system, path in score_files.items():
        data = json.loads(Path(path).read_text())
        errors[system] = {
            test_set: {
                uid: (counts_from_dict(c).char_errors if test_set in cer_sets else counts_from_dict(c).errors)
                for uid, c in entry["utterances"].items()
            }
            for test_set, entry in data.items()
        }
    return errors


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------------


def _metric(frame: pd.DataFrame) -> str:
    return "error_rate" if "error_rate" in frame.columns else "wer"


def set_counts(frame: pd.DataFrame) -> pd.Series:
    """Number of test sets per group."""
    return frame.drop_duplicates("test_set").groupby("group").size()


def group_averages(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """System x group table of mean per-set error rates (fractions), groups in GROUP_ORDER, with the EP average."""
    metric = metric or _metric(frame)
    table = frame.pivot_table(index="system", columns="group", values=metric, aggfunc="mean", sort=False)
    table = table.reindex(list(dict.fromkeys(frame.system)))
    if {"ID", "OOD"} <= set(table.columns):
        weights = set_counts(frame)[["ID", "OOD"]]
        table[EP_AVERAGE] = (table[["ID", "OOD"]] * weights).sum(axis=1, min_count=2) / weights.sum()
    return table[[g for g in GROUP_ORDER if g in table.columns] + [g for g in table.columns if g not in GROUP_ORDER]]


def own_domain_row(frame: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """ID-FT (own domain): ID = each domain's fine-tune on its own test set, averaged over domains; the other groups
    average the per-domain fine-tunes (the mean ID-FT model); EP avg weighted as everywhere."""
    metric = metric or _metric(frame)
    own = frame[(frame.group == "ID") & (frame.system == frame.test_set.map(finetuned_system))]
    finetuned = frame[frame.system.map(is_finetuned)]
    row = group_averages(finetuned, metric).mean(axis=0)
    row["ID"] = own[metric].mean()
    if EP_AVERAGE in row.index:
        weights = set_counts(frame)[["ID", "OOD"]]
        row[EP_AVERAGE] = (row[["ID", "OOD"]] * weights).sum() / weights.sum()
    row.name = OWN_DOMAIN
    return row


def _own_domain_errors(errors: Mapping[str, Mapping[str, Mapping[str, int]]], frame: pd.DataFrame) -> dict:
    """Per-utterance errors of the composite ID-FT system on the ID sets (each set by its own fine-tune)."""
    id_sets = frame.loc[frame.group == "ID", "test_set"].unique()
    return {s: errors[finetuned_system(s)][s] for s in id_sets if finetuned_system(s) in errors}


def _pvalue(errors, reference: str, system: str, sets: Sequence[str]) -> float:
    if system == reference or reference not in errors or system not in errors:
        return np.nan
    if not all(s in errors[system] and s in errors[reference] for s in sets):
        return np.nan
    ids = [(s, uid) for s in sets for uid in errors[reference][s]]
    if len(ids) < 2:  # MAPSSWE needs two segments for a variance
        return np.nan
    a = [errors[reference][s][uid] for s, uid in ids]
    b = [errors[system][s][uid] for s, uid in ids]
    return mapsswe(a, b).p_value


def group_significance(
    errors: Mapping[str, Mapping[str, Mapping[str, int]]], frame: pd.DataFrame, reference: str
) -> pd.DataFrame:
    """MAPSSWE p-values of every system against `reference`, per group (utterances pooled across the group's sets);
    the ID-FT (own domain) row is tested on ID only."""
    groups = frame.drop_duplicates("test_set").groupby("group", sort=False).test_set.apply(list)
    errors = dict(errors)
    if frame.system.map(is_finetuned).any():
        errors[OWN_DOMAIN] = _own_domain_errors(errors, frame)
    table = {system: {group: _pvalue(errors, reference, system, sets) for group, sets in groups.items()}
             for system in errors}
    return pd.DataFrame.from_dict(table, orient="index")


def system_averages(frame: pd.DataFrame, per_domain: bool = False) -> pd.DataFrame:
    """Group averages (fractions) per system, with the ID-FT (own domain) row in place of the per-domain fine-tunes
    (kept too with `per_domain`): the rows of the paper table and of the figures drawn from it."""
    averages = group_averages(frame)
    finetuned = [s for s in averages.index if is_finetuned(s)]
    if not finetuned:
        return averages
    position = list(averages.index).index(finetuned[0])
    upper = own_domain_row(frame).reindex(averages.columns).to_frame().T
    averages = pd.concat([averages.iloc[:position], upper, averages.iloc[position:]])
    if per_domain:
        return averages
    return averages.loc[[s for s in averages.index if not is_finetuned(s) or s == OWN_DOMAIN]]


def paper_table(
    frame: pd.DataFrame, errors, reference: str | None = JOINT, per_domain: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Error rates (%) in the paper's layout and the matching p-values against `reference` (NaN where not tested).

    Index: system ids; the ID-FT (own domain) row (`OWN_DOMAIN`) follows the baselines; the single-domain fine-tunes
    themselves only with `per_domain`.
    """
    averages = system_averages(frame, per_domain)
    if reference is None or reference not in errors:
        return averages * 100, pd.DataFrame(np.nan, index=averages.index, columns=averages.columns)
    pvalues = group_significance(errors, frame, reference)
    pvalues[EP_AVERAGE] = np.nan  # a weighted mean of two groups has no single paired test
    return averages * 100, pvalues.reindex(index=averages.index, columns=averages.columns)


def per_set_table(frame: pd.DataFrame, errors=None, reference: str | None = JOINT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Error rates (%) per system and test set (sets grouped ID, OOD, English, ...) and per-set p-values."""
    metric = _metric(frame)
    table = frame.pivot_table(index="system", columns="test_set", values=metric, sort=False) * 100
    table = table.reindex(index=list(dict.fromkeys(frame.system)), columns=list(dict.fromkeys(frame.test_set)))
    pvalues = pd.DataFrame(np.nan, index=table.index, columns=table.columns)
    if errors is not None and reference is not None and reference in errors:
        for system in table.index:
            for test_set in table.columns:
                pvalues.at[system, test_set] = _pvalue(errors, reference, system, [test_set])
    return table, pvalues


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------

_STYLES = {
    "markdown": {"bold": ("**", "**"), "dagger": " †", "missing": "–"},
    "latex": {"bold": (r"\textbf{", "}"), "dagger": r"$^\dagger$", "missing": "--"},
    "html": {"bold": ("<b>", "</b>"), "dagger": "<sup>†</sup>", "missing": "–"},
}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "λ": r"$\lambda$", "β": r"$\beta$",
                  "†": r"$^\dagger$", "–": "--", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def best_rows(table: pd.DataFrame, ranked: Sequence[str]) -> dict[str, set[str]]:
    """Column -> the systems (among `ranked`) holding the lowest value (ties all count)."""
    best = {}
    for column in table.columns:
        values = table.loc[[s for s in ranked if s in table.index], column].dropna()
        best[column] = set(values.index[np.isclose(values, values.min())]) if len(values) else set()
    return best


def marked_cells(
    table: pd.DataFrame, pvalues: pd.DataFrame, style: str, ranked: Sequence[str] | None = None
) -> pd.DataFrame:
    """Text cells with two decimals: the best of `ranked` rows per column in bold, a dagger where p < 0.05."""
    marks = _STYLES[style]
    ranked = list(table.index) if ranked is None else ranked
    best = best_rows(table, ranked)
    cells = pd.DataFrame("", index=table.index, columns=table.columns)
    for column in table.columns:
        for system in table.index:
            value = table.at[system, column]
            if pd.isna(value):
                cells.at[system, column] = marks["missing"]
                continue
            text = f"{value:.2f}"
            if system in best[column]:
                text = f"{marks['bold'][0]}{text}{marks['bold'][1]}"
            p = pvalues.at[system, column] if system in pvalues.index and column in pvalues.columns else np.nan
            if not pd.isna(p) and p < SIGNIFICANCE_LEVEL:
                text += marks["dagger"]
            cells.at[system, column] = text
    return cells


def _blocks(systems: Sequence[str], families: Mapping[str, str]) -> list[int]:
    """Row positions where a new family block starts (after the first)."""
    fams = [families.get(s, "other") for s in systems]
    return [i for i in range(1, len(fams)) if fams[i] != fams[i - 1]]


def render_markdown(cells: pd.DataFrame, labels: Mapping[str, str], title: str, note: str, corner: str = "System") -> str:
    shown = cells.copy()
    shown.index = [labels.get(s, s) for s in shown.index]
    shown.index.name = corner
    return f"{title}\n\n{shown.to_markdown()}\n\n{note}\n"


def render_latex(
    cells: pd.DataFrame, labels: Mapping[str, str], note: str, blocks: Sequence[int] = (),
    column_groups: Sequence[tuple[str, int]] | None = None, corner: str = "System",
) -> str:
    """A booktabs tabular: \\toprule, header (optionally a grouped header row), \\midrule, rows with a \\midrule between
    blocks, \\bottomrule."""
    n = len(cells.columns)
    lines = [f"% {note}", "% requires \\usepackage{booktabs}", f"\\begin{{tabular}}{{l{'r' * n}}}", r"\toprule"]
    if column_groups:
        spans, rules, start = [""], [], 2
        for name, width in column_groups:
            spans.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(name)}}}")
            rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines.append(" & ".join(spans) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([latex_escape(corner)] + [latex_escape(c) for c in cells.columns]) + r" \\")
    lines.append(r"\midrule")
    for i, system in enumerate(cells.index):
        if i in blocks:
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_escape(labels.get(system, system))] + list(cells.loc[system])) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 3px 9px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead tr:last-child th { border-bottom: 1.5px solid #333; }
thead tr:first-child th { border-top: 2px solid #333; }
tbody tr:last-child td { border-bottom: 2px solid #333; }
tr.block td { border-top: 1px solid #888; }
p.note { color: #444; max-width: 60em; }
"""


def render_html(
    cells: pd.DataFrame, labels: Mapping[str, str], title: str, note: str, blocks: Sequence[int] = (),
    column_groups: Sequence[tuple[str, int]] | None = None, corner: str = "System",
) -> str:
    """A self-contained HTML page with the table (cells already carry their <b>/<sup> marks)."""
    head = []
    if column_groups:
        head.append("<tr><th></th>" + "".join(f'<th colspan="{w}" style="text-align:center">{html.escape(g)}</th>'
                                              for g, w in column_groups) + "</tr>")
    head.append(f"<tr><th>{html.escape(corner)}</th>"
                + "".join(f"<th>{html.escape(str(c))}</th>" for c in cells.columns) + "</tr>")
    body = []
    for i, system in enumerate(cells.index):
        css = ' class="block"' if i in blocks else ""
        body.append(f"<tr{css}><td>{html.escape(labels.get(system, system))}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells.loc[system]) + "</tr>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_HTML_STYLE}</style></head><body>\n<h3>{html.escape(title)}</h3>\n<table>\n<thead>\n"
            + "\n".join(head) + "\n</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
            f"<p class=\"note\">{html.escape(note)}</p>\n</body></html>\n")


def _labels(frame: pd.DataFrame) -> dict[str, str]:
    labels = dict(zip(frame.system, frame.label)) if "label" in frame.columns else {}
    return {OWN_DOMAIN: ID_FT, **{s: labels.get(s, system_label(s)) for s in dict.fromkeys(frame.system)}}


def _families(frame: pd.DataFrame) -> dict[str, str]:
    families = dict(zip(frame.system, frame.family)) if "family" in frame.columns else {}
    return {OWN_DOMAIN: "ID-FT", **{s: families.get(s) or system_family(s) for s in dict.fromkeys(frame.system)}}


def _significance_note(reference: str | None, has_pvalues: bool) -> str:
    if not reference or not has_pvalues:
        return ""
    name = REFERENCE_LABEL.get(reference, reference)
    return f" † = significantly different from {name} (MAPSSWE, p < {SIGNIFICANCE_LEVEL})."


def _flag_note(frame: pd.DataFrame) -> str:
    """How many hypotheses behind the table were cut at the token cap or caught in a loop (asrmerge.evaluation.
    hypotheses.FLAGS), naming the worst system and set: such error rates are not those of complete transcripts."""
    columns = [f"flagged_{flag}" for flag in FLAGS]
    if not set(columns) <= set(frame.columns):
        return ""
    per_cell = frame[columns].sum(axis=1)
    if not per_cell.any():
        return " No hypothesis reached the token cap or repeated itself."
    totals = ", ".join(f"{int(frame[c].sum())} {flag.replace('_', ' ')}" for c, flag in zip(columns, FLAGS))
    worst = frame.loc[per_cell.idxmax()]
    return (f" Flagged hypotheses: {totals} (of {int(frame.utterances.sum())}) in {int((per_cell > 0).sum())} "
            f"system-set cells, most in {worst.system} on {worst.test_set} ({int(per_cell.max())}); see the score files.")


def _baseline_note(frame: pd.DataFrame) -> str:
    return "" if (frame.system == JOINT).any() else " Full-FT was not run (finetune.joint: null)."


def _metric_note(frame: pd.DataFrame) -> str:
    cer = sorted(frame.loc[frame.metric == "cer", "test_set"].unique()) if "metric" in frame.columns else []
    return "Error rates in %: WER" + (f"; CER for {', '.join(cer)} (unsegmented languages)." if cer else ".")


def write_tables(
    frame: pd.DataFrame, csv_path: str | Path, markdown_path: str | Path, latex_path: str | Path | None = None,
    wide_csv_path: str | Path | None = None, html_path: str | Path | None = None, errors=None,
    reference: str | None = JOINT,
) -> None:
    """The per-test-set table: long CSV with every count (`csv_path`), and error rates (%) per system and set as
    Markdown, LaTeX, wide CSV (with p-values) and HTML."""
    write_text(csv_path, frame.to_csv(index=False, float_format="%.6f"))
    table, pvalues = per_set_table(frame, errors, reference)
    cer = set(frame.loc[frame.metric == "cer", "test_set"]) if "metric" in frame.columns else set()
    shown = {s: f"{s} (CER)" if s in cer else s for s in table.columns}
    groups = frame.drop_duplicates("test_set").set_index("test_set").group
    in_order = groups[list(table.columns)]
    column_groups = [(SET_GROUP_NAMES.get(g, g), int((in_order == g).sum())) for g in dict.fromkeys(in_order)]
    labels, families = _labels(frame), _families(frame)
    note = (_metric_note(frame) + " Best per column in bold."
            + _significance_note(reference, bool(pvalues.notna().any().any())) + _baseline_note(frame)
            + _flag_note(frame))
    title = "WER (%) per test set" + (" (CER (%) for the sets marked CER)" if cer else "")
    cells = {style: marked_cells(table, pvalues, style).rename(columns=shown) for style in _STYLES}
    write_text(markdown_path, render_markdown(cells["markdown"], labels, title, note))
    blocks = _blocks(list(table.index), families)
    if latex_path is not None:
        write_text(latex_path, "% wide: wrap in \\resizebox{\\textwidth}{!}{...} (graphicx) if needed\n"
                   + render_latex(cells["latex"], labels, note, blocks, column_groups))
    if wide_csv_path is not None:
        wide = table.join(pvalues.add_suffix(" p"))
        wide.insert(0, "label", [labels[s] for s in wide.index])
        wide.index.name = "system"
        write_text(wide_csv_path, wide.to_csv(float_format="%.6f"))
    if html_path is not None:
        write_text(html_path, render_html(cells["html"], labels, title, note, blocks, column_groups))


def paper_note(frame: pd.DataFrame, reference: str | None, has_pvalues: bool) -> str:
    counts = set_counts(frame)
    parts = [_metric_note(frame), "Group columns are means over their test sets."]
    if {"ID", "OOD"} <= set(counts.index):
        n_id, n_ood = int(counts["ID"]), int(counts["OOD"])
        parts.append(f"EP avg = ({n_id}·ID + {n_ood}·OOD) / {n_id + n_ood}.")
    if frame.system.map(is_finetuned).any():
        parts.append(f"{ID_FT}: each domain's test set by its own fine-tune (one model per domain, not ranked); "
                     "its other columns average the per-domain fine-tunes.")
    parts.append("Best per column in bold." + _significance_note(reference, has_pvalues) + _baseline_note(frame)
                 + _flag_note(frame))
    return " ".join(parts)


def write_paper_tables(
    table: pd.DataFrame, pvalues: pd.DataFrame, reference: str | None, paths: Sequence[str | Path],
    frame: pd.DataFrame | None = None,
) -> None:
    """CSV (numbers and p-values), Markdown, LaTeX (booktabs) and, given a 4th path, HTML of the paper-layout table.

    `frame` (from load_scores) supplies row labels, family blocks and the notes; without it the system ids are used.
    """
    paths = list(map(Path, paths))
    csv_path, markdown_path, latex_path = paths[:3]
    labels = _labels(frame) if frame is not None else {OWN_DOMAIN: ID_FT}
    families = _families(frame) if frame is not None else {}
    ranked = [s for s in table.index if s != OWN_DOMAIN]
    has_p = bool(pvalues.notna().any().any())
    note = paper_note(frame, reference, has_p) if frame is not None else (
        "Best per column in bold." + _significance_note(reference, has_p))
    headings = {c: COLUMN_NAMES.get(c, c) for c in table.columns}

    combined = table.rename(columns=headings).join(pvalues.rename(columns=headings).add_suffix(" p"), how="left")
    combined.insert(0, "label", [labels.get(s, s) for s in combined.index])
    combined.insert(1, "family", [families.get(s, "") for s in combined.index])
    combined.index.name = "system"
    write_text(csv_path, combined.to_csv(float_format="%.6f"))

    has_cer = frame is not None and "metric" in frame.columns and (frame.metric == "cer").any()
    title = "WER (%) in the paper's layout" + (" (CER for unsegmented languages)" if has_cer else "")
    cells = {style: marked_cells(table, pvalues, style, ranked).rename(columns=headings) for style in _STYLES}
    blocks = _blocks(list(table.index), families)
    write_text(markdown_path, render_markdown(cells["markdown"], labels, title, note))
    write_text(latex_path, render_latex(cells["latex"], labels, note, blocks))
    if len(paths) > 3:
        write_text(paths[3], render_html(cells["html"], labels, title, note, blocks))


def write_run_tables(
    score_files: Mapping[str, str | Path], selection_files: Mapping[str, str | Path],
    manifests: Mapping[str, str | Path], roles: Mapping[str, str], reference: str | None,
    outputs: Mapping[str, str | Path], metrics: Mapping[str, str] | None = None,
) -> None:
    """Every table of a run (the table rule, `asrmerge table`): system -> score file, merge branch -> selection record,
    test set -> manifest and set -> role in; `outputs` maps asrmerge.layout.TABLE_FILES' keys to paths;
    `metrics` the sets whose config names their metric (cer_sets)."""
    selections = {branch: json.loads(Path(path).read_text()) for branch, path in selection_files.items()}
    unsegmented = cer_sets(manifests, metrics)
    frame = load_scores(score_files, roles, unsegmented, system_catalog(list(score_files), selections))
    errors = load_utterance_errors(score_files, unsegmented)
    write_tables(frame, outputs["csv"], outputs["markdown"], outputs["latex"], outputs["wide_csv"], outputs["html"],
                 errors, reference)
    table, pvalues = paper_table(frame, errors, reference)
    paper = [outputs[key] for key in ("paper_csv", "paper_markdown", "paper_latex", "paper_html")]
    write_paper_tables(table, pvalues, reference, paper, frame)
