"""Figures of the benchmark, each written as PNG and PDF at a size readable in a two-column paper.

Every figure is drawn only from cached files of the workflow (asrmerge.workflow.figure_plan says which):
the per-set table `tables/wer.csv` (written by the table rule, with row labels and families), the selection records
`selection/{method}/{params}.json`, and the merge diagnostics `merges/{method}/{params}/diagnostics.json`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from asrmerge.atomic import staged_path  # noqa: E402
from asrmerge.layout import BASE, JOINT, is_finetuned, merged_system  # noqa: E402
from asrmerge.layout import chosen_lambda as recorded_lambda  # noqa: E402
from asrmerge.report.naming import (  # noqa: E402
    FAMILY_NAMES, METHOD_NAMES, OWN_DOMAIN, method_label, parse_params, system_colour, system_label,
)
from asrmerge.workflow.figure_plan import DEFAULT_SPECTRUM_LAYER, FIGURE_KINDS, HIGHLIGHTED_BETA, SWEEP_PARAM  # noqa: E402
from asrmerge.report.tables import COLUMN_NAMES  # noqa: E402
from asrmerge.report.tables import system_averages as average_fractions  # noqa: E402

log = logging.getLogger(__name__)

COLUMN_WIDTH = 3.4  # inches, one column of a two-column paper
FULL_WIDTH = 7.0
PAPER_STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 6.5, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}
GROUP_COLOURS = {"ID": "#1f77b4", "OOD": "#ff7f0e", "EP general": "#8c564b", "EP words": "#e377c2", "Long-form": "#7f7f7f",
                 "Accented": "#bcbd22", "English": "#2ca02c", "Brazilian": "#d62728", "Multilingual": "#9467bd"}
# Colours are the methods' (naming.system_colour); markers tell the families apart, line styles the branches of one
# method (its hyperparameter settings).
FAMILY_MARKERS = {"baseline": "s", "ID-FT": "^", "parameter": "o", "task_vector": "P", "subspace": "D",
                  "data_aware": "X", "other": "o"}
BRANCH_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "v"), ((0, (5, 1, 1, 1)), "D")]
LABEL_ITERATIONS = 400  # adjustText's label-placement steps in id_vs_ood
_LAYER = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)$")
#: Per format, the metadata that would make two drawings of one figure differ, left out: the same run gives the
#: same bytes (a PDF's creation date; PNG has none).
UNDATED = {"pdf": {"CreationDate": None}}


def _save(fig, paths) -> None:
    for path in paths:
        with staged_path(path) as staged:
            kind = Path(path).suffix.lstrip(".")
            fig.savefig(staged, dpi=300, format=kind, metadata=UNDATED.get(kind))
    plt.close(fig)


def short_name(system: str) -> str:
    """Readable name of a system id without λ ("TIES (density=0.2)", "Full-FT")."""
    return system_label(system)


def _labels(frame: pd.DataFrame, column: str = "label") -> dict[str, str]:
    names = dict(zip(frame.system, frame[column])) if column in frame.columns else {}
    return {OWN_DOMAIN: system_label(OWN_DOMAIN), **{s: names.get(s) or short_name(s) for s in frame.system}}


def _families(frame: pd.DataFrame) -> dict[str, str]:
    families = dict(zip(frame.system, frame.family)) if "family" in frame.columns else {}
    out = {OWN_DOMAIN: "ID-FT"}
    for system in frame.system:
        out[system] = families.get(system) or ("ID-FT" if is_finetuned(system) else
                                               "baseline" if system in (BASE, JOINT) else "other")
    return out


def system_averages(frame: pd.DataFrame, per_domain: bool = False) -> pd.DataFrame:
    """Group averages (%) per system as in the paper table: the ID-FT (own domain) row replaces the per-domain
    fine-tunes (kept too with `per_domain`)."""
    return average_fractions(frame, per_domain) * 100


def _axis_name(group: str) -> str:
    return COLUMN_NAMES.get(group, group)


# ---------------------------------------------------------------------------------------------------------------------
# From the table
# ---------------------------------------------------------------------------------------------------------------------


def wer_by_system(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Grouped bars: one group per system, one bar each for EP ID, EP OOD and English (those the config has)."""
    averages = system_averages(frame)
    groups = [g for g in ("ID", "OOD", "English") if g in averages.columns] or list(averages.columns[:3])
    labels = _labels(frame)
    n = len(averages)
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH, min(FULL_WIDTH, 0.16 * n * len(groups) + 1.5)), 2.9))
        width = 0.8 / len(groups)
        x = np.arange(n)
        for i, group in enumerate(groups):
            values = averages[group].to_numpy(dtype=float)
            ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=_axis_name(group),
                   color=GROUP_COLOURS.get(group))
        if JOINT in averages.index:
            for group in groups:
                ax.axhline(averages.at[JOINT, group], color=GROUP_COLOURS.get(group), linestyle=":", linewidth=0.8)
        ax.set_xticks(x, [labels.get(s, s) for s in averages.index], rotation=40, ha="right")
        ax.set_ylabel("error rate (%)")
        ax.set_xlim(-0.6, n - 0.4)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(ncol=len(groups), loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False,
                  title="dotted: Full-FT", title_fontsize=6.5, alignment="left")
        _save(fig, paths)


def _pareto(points: np.ndarray) -> np.ndarray:
    """Lower-left Pareto front of (x, y) points, sorted by x."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    front, best_y = [], np.inf
    for i in order:
        if points[i, 1] < best_y:
            front.append(points[i])
            best_y = points[i, 1]
    return np.array(front)


def id_vs_ood(frame: pd.DataFrame, *paths: str | Path) -> None:
    """Trade-off scatter: in-domain against out-of-domain error, one point per system in its method's colour with its
    family's marker, names placed clear of each other (adjustText); the lower-left Pareto front of the one-model
    systems dashed. Without OOD sets the y axis is the next held-out group, and its label says which."""
    from adjustText import adjust_text

    averages = system_averages(frame, per_domain=True)
    other = next((g for g in ("OOD", "EP general", "English", "Brazilian", "Multilingual") if g in averages.columns), "ID")
    labels, families = _labels(frame, "short_label"), _families(frame)
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.35, COLUMN_WIDTH * 1.05))
        seen, xs, ys = set(), [], []
        named: dict[tuple[float, float], list[str]] = {}  # systems at the same point share one label ("A = B")
        for system, row in averages.iterrows():
            family = families.get(system, "other")
            marker = "*" if system == OWN_DOMAIN else FAMILY_MARKERS.get(family, "o")
            size = 70 if system == OWN_DOMAIN else 12 if is_finetuned(system) else 26
            ax.scatter(row["ID"], row[other], marker=marker, s=size, color=system_colour(system), zorder=3,
                       edgecolor="white", linewidth=0.4)
            xs.append(row["ID"])
            ys.append(row[other])
            if family not in seen:  # the legend explains the markers; the names sit next to the points
                seen.add(family)
                ax.scatter([], [], marker=marker, s=26, color="#777777",
                           label=labels[OWN_DOMAIN] if system == OWN_DOMAIN else FAMILY_NAMES.get(family, family))
            if not is_finetuned(system) or system == OWN_DOMAIN:
                named.setdefault((round(row["ID"], 6), round(row[other], 6)), []).append(system)
        texts = [ax.text(x, y, " = ".join(labels.get(s, s) for s in systems), fontsize=5.5, color=_text_colour(systems[0]))
                 for (x, y), systems in named.items()]
        # the front of the systems that serve every domain with one model (not the single-domain fine-tunes)
        single = averages.loc[[s for s in averages.index if not is_finetuned(s)], ["ID", other]]
        single = single.dropna().to_numpy(dtype=float).round(6)
        if len(single) >= 2 and other != "ID":
            front = _pareto(single)
            ax.plot(front[:, 0], front[:, 1], linestyle="--", color="#999999", linewidth=0.8, zorder=1,
                    label="Pareto front")
        ax.set_xlabel(f"{_axis_name('ID')} error rate (%)")
        ax.set_ylabel(f"{_axis_name(other)} error rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside: never over a point
        # A fixed number of iterations: adjustText otherwise stops after 1 s of wall clock, so the label positions
        # (and the figure's bytes) would depend on the machine's load.
        adjust_text(texts, x=xs, y=ys, ax=ax, expand=(1.4, 1.9), force_text=(0.8, 1.6), force_static=(0.4, 0.8),
                    iter_lim=LABEL_ITERATIONS,
                    arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.4})
        _save(fig, paths)


def _text_colour(system: str) -> str:
    """A label in its point's colour, darkened where the colour is too light to read on white (yellow)."""
    red, green, blue = matplotlib.colors.to_rgb(system_colour(system))
    light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.7
    return matplotlib.colors.to_hex((red * 0.6, green * 0.6, blue * 0.6)) if light else system_colour(system)


def heatmap(frame: pd.DataFrame, *paths: str | Path) -> None:
    """System x test set: each cell's error rate (%) written in it, coloured by its relative change against the
    zero-shot base on that set (blue better, red worse), so adaptation and forgetting read at a glance. With more
    test sets than systems the sets run down the page (rows) so that a paper page holds them."""
    metric = "error_rate" if "error_rate" in frame.columns else "wer"
    table = frame.pivot_table(index="system", columns="test_set", values=metric, sort=False) * 100
    table = table.reindex(index=list(dict.fromkeys(frame.system)), columns=list(dict.fromkeys(frame.test_set)))
    labels, families = _labels(frame), _families(frame)
    cer = set(frame.loc[frame.metric == "cer", "test_set"]) if "metric" in frame.columns else set()
    relative = BASE in table.index
    colour = 100 * (table / table.loc[BASE] - 1) if relative else table
    set_names = [f"{s} (CER)" if s in cer else s for s in table.columns]
    system_names = [labels.get(s, s) for s in table.index]
    groups = frame.drop_duplicates("test_set").set_index("test_set").group.reindex(table.columns).tolist()
    fams = [families.get(s, "other") for s in table.index]
    transpose = table.shape[1] > table.shape[0]
    if transpose:
        table, colour = table.T, colour.T
        row_names, column_names, row_breaks, column_breaks = set_names, system_names, groups, fams
    else:
        row_names, column_names, row_breaks, column_breaks = system_names, set_names, fams, groups
    values, colours = table.to_numpy(dtype=float), colour.to_numpy(dtype=float)
    size = 6.0 if max(table.shape) <= 12 else 4.2  # the numbers in the cells
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(max(COLUMN_WIDTH * 1.3, 0.2 * table.shape[1] + 2.2),
                                        0.16 * table.shape[0] + 1.2))
        if relative:
            finite = colours[np.isfinite(colours)]
            limit = max(10.0, min(100.0, float(np.abs(finite).max()) if finite.size else 10.0))
            image = ax.imshow(np.clip(colours, -limit, limit), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        else:
            limit = np.inf
            image = ax.imshow(values, aspect="auto", cmap="viridis_r")
        ax.set_xticks(range(table.shape[1]), column_names, rotation=45, ha="right", fontsize=6.5)
        ax.set_yticks(range(table.shape[0]), row_names, fontsize=6.5)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if np.isfinite(values[i, j]):
                    dark = relative and np.isfinite(colours[i, j]) and abs(colours[i, j]) > 0.6 * limit
                    ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=size,
                            color="white" if dark else "black")
        for j in range(1, len(column_breaks)):
            if column_breaks[j] != column_breaks[j - 1]:
                ax.axvline(j - 0.5, color="black", linewidth=0.8)
        for i in range(1, len(row_breaks)):
            if row_breaks[i] != row_breaks[i - 1]:
                ax.axhline(i - 0.5, color="black", linewidth=0.6)
        ax.spines[:].set_visible(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        bar.set_label("change vs Zero-shot (%)" if relative else "error rate (%)")
        _save(fig, paths)


def _sweep_groups(system_ids: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
    """"merged/boosted_tsv_m/beta=0.3+orthogonaliser=svd" ... -> {other params label: [(beta, system), ...]}."""
    groups: dict[str, list[tuple[float, str]]] = {}
    for system in system_ids:
        _, method, params = system.split("/", 2)
        parsed = parse_params(params)
        beta = float(parsed.pop(SWEEP_PARAM))
        key = method_label(method, ",".join(f"{k}={v}" for k, v in parsed.items()) or "default")
        groups.setdefault(key, []).append((beta, system))
    return {k: sorted(v) for k, v in groups.items()}


def beta_sweep(frame: pd.DataFrame, branch_ids: Sequence[str], *paths: str | Path) -> None:
    """BoostedTSV-M: EP ID and EP OOD test error (each at its λ chosen on validation) against β; β = 0.3 marked,
    Full-FT as dotted lines."""
    averages = system_averages(frame)
    groups = [g for g in ("ID", "OOD") if g in averages.columns]
    if len(groups) < 2:
        groups += [g for g in ("English", "Brazilian", "Multilingual") if g in averages.columns][:1]
    sweeps = _sweep_groups([merged_system(b) for b in branch_ids])
    with plt.rc_context(PAPER_STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.2, COLUMN_WIDTH * 0.85))
        styles = ["-", "--", "-.", ":"]
        for k, (name, points) in enumerate(sweeps.items()):
            betas = [b for b, _ in points]
            for group in groups:
                values = [averages.at[s, group] if s in averages.index else np.nan for _, s in points]
                label = _axis_name(group) + (f" — {name}" if len(sweeps) > 1 else "")
                ax.plot(betas, values, marker="o", markersize=3, linestyle=styles[k % len(styles)],
                        color=GROUP_COLOURS.get(group), label=label)
                highlighted = [v for b, v in zip(betas, values) if np.isclose(b, HIGHLIGHTED_BETA)]
                if highlighted:
                    ax.scatter([HIGHLIGHTED_BETA], highlighted, s=70, facecolors="none",
                               edgecolors=GROUP_COLOURS.get(group), linewidths=1.2, zorder=4)
        if JOINT in averages.index:
            for group in groups:
                ax.axhline(averages.at[JOINT, group], color=GROUP_COLOURS.get(group), linestyle=":", linewidth=0.8,
                           label=f"Full-FT {_axis_name(group)}")
        ax.axvline(HIGHLIGHTED_BETA, color="#999999", linewidth=0.6, zorder=0)
        ax.set_xlabel("β (cumulative-energy threshold; 1 = TSV-M)")
        ax.set_ylabel("test error rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=6)
        _save(fig, paths)


# ---------------------------------------------------------------------------------------------------------------------
# From the selection records
# ---------------------------------------------------------------------------------------------------------------------


def lambda_curves(selections: Mapping[str, str | Path], *paths: str | Path) -> None:
    """Validation WER against λ: one panel per merge method, one line per hyperparameter setting, the chosen λ
    circled. Methods whose grid has a single λ (nothing to choose) are left out unless no method has more."""
    by_method: dict[str, list[tuple[str, dict]]] = {}
    for branch_id, path in selections.items():
        method, params = branch_id.split("/", 1)
        by_method.setdefault(method, []).append((params, json.loads(Path(path).read_text())))
    curves = {m: e for m, e in by_method.items() if any(len(d["curve"]) > 1 for _, d in e)}
    by_method = curves or by_method  # a single-λ grid (parameter-space merges) chose nothing: left out
    n = max(len(by_method), 1)
    columns = min(4, n)
    rows = -(-n // columns)
    with plt.rc_context(PAPER_STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(FULL_WIDTH if columns > 1 else COLUMN_WIDTH * 1.2,
                                                          1.75 * rows + 0.3), squeeze=False)
        for ax, (method, entries) in zip(axes.flat, by_method.items()):
            colour = system_colour(method)
            for k, (params, data) in enumerate(entries):
                linestyle, marker = BRANCH_STYLES[k % len(BRANCH_STYLES)]
                lambdas = [p["lambda"] for p in data["curve"]]
                wers = [100 * p["wer"] for p in data["curve"]]
                label = method_label(method, params).removeprefix(METHOD_NAMES.get(method, method)).strip()
                label = (label[1:-1] if label.startswith("(") and label.endswith(")") else label) or "default"
                ax.plot(lambdas, wers, marker=marker, markersize=2.5, linewidth=1, linestyle=linestyle, color=colour,
                        label=label)
                chosen = recorded_lambda(data)
                if chosen in lambdas:
                    ax.scatter([chosen], [wers[lambdas.index(chosen)]], s=45, facecolors="none", edgecolors=colour,
                               linewidths=1.1, zorder=3)
            ax.set_title(METHOD_NAMES.get(method, method))
            ax.grid(alpha=0.3)
            if len(entries) > 1:
                ax.legend(fontsize=5, frameon=False, ncol=2 if len(entries) > 5 else 1)
        for ax in axes.flat[len(by_method):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("λ")
        for ax in axes[:, 0]:
            ax.set_ylabel("validation WER (%)")
        fig.tight_layout()
        _save(fig, paths)


# ---------------------------------------------------------------------------------------------------------------------
# From the merge diagnostics
# ---------------------------------------------------------------------------------------------------------------------


def _load_diagnostics(diagnostics: Mapping[str, str | Path]) -> dict[str, dict]:
    loaded = {}
    for branch_id, path in diagnostics.items():
        data = json.loads(Path(path).read_text())
        if data.get("disabled") or not data.get("tensors"):
            log.warning("%s: no diagnostics recorded, left out", path)
            continue
        loaded[branch_id] = data["tensors"]
    if not loaded:
        raise ValueError("no merge diagnostics to draw (merge.diagnostics off?)")
    return loaded


def choose_layer(names: Sequence[str], layer: str = DEFAULT_SPECTRUM_LAYER) -> str:
    """The tensor of the spectra figure: `layer` by name, else as a regular expression (first match in name order);
    "auto" = the fc1 weight of the middle decoder layer (else the middle 2-D tensor)."""
    names = sorted(names)
    if layer and layer != "auto":
        if layer in names:
            return layer
        matches = [n for n in names if re.search(layer, n)]
        if not matches:
            raise ValueError(f"no matrix matches the spectrum layer {layer!r}")
        return matches[0]
    fc1 = {int(m.group(2)): n for n in names
           if (m := _LAYER.search(n)) and m.group(1) == "decoder" and m.group(3) == "fc1.weight"}
    if fc1:
        indices = sorted(fc1)
        return fc1[indices[len(indices) // 2]]
    return names[len(names) // 2]


def _branch_label(branch_id: str) -> str:
    method, params = branch_id.split("/", 1)
    return method_label(method, params)


def _branch_style(branch_id: str, branches: Iterable[str]) -> dict[str, Any]:
    """Its method's colour; a line style and marker per branch among the branches of the same method."""
    method = branch_id.split("/", 1)[0]
    siblings = [b for b in branches if b.split("/", 1)[0] == method]
    linestyle, marker = BRANCH_STYLES[siblings.index(branch_id) % len(BRANCH_STYLES)]
    return {"color": system_colour(method), "linestyle": linestyle, "marker": marker}


def spectra(diagnostics: Mapping[str, str | Path], layer: str, *paths: str | Path) -> None:
    """Singular values of one layer's merged task vector per merge (left: σ_i; right: σ_i / σ_1), with the domains'
    own task vectors in grey: a fast decay (low effective rank) is the rank collapse; Iso-C is flat by design."""
    data = _load_diagnostics(diagnostics)
    name = choose_layer(next(iter(data.values())).keys(), layer)
    with plt.rc_context(PAPER_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.5))
        first = next(d[name] for d in data.values() if name in d)
        for k, task in enumerate(first["task_singular_values"]):
            s = np.asarray(task, dtype=float)
            i = np.arange(1, len(s) + 1)
            label = "domain task vectors τ_t" if k == 0 else None
            left.plot(i, s, color="#bbbbbb", linewidth=0.7, label=label)
            right.plot(i, s / s[0] if s[0] > 0 else s, color="#bbbbbb", linewidth=0.7, label=label)
        for branch_id, tensors in data.items():
            if name not in tensors:
                log.warning("%s has no tensor %s", branch_id, name)
                continue
            record = tensors[name]
            s = np.asarray(record["merged_singular_values"], dtype=float)
            i = np.arange(1, len(s) + 1)
            label = f"{_branch_label(branch_id)} (erank {record['merged_effective_rank']:.0f})"
            style = _branch_style(branch_id, data) | {"linewidth": 1.3, "markersize": 2.5, "label": label}
            left.plot(i, s, **style)
            right.plot(i, s / s[0] if s[0] > 0 else s, **style)
        left.set_ylabel("singular value σ_i")
        right.set_ylabel("σ_i / σ_1")
        for ax in (left, right):
            ax.set_yscale("log")
            ax.set_xlabel("index i")
            ax.grid(alpha=0.3, which="both")
        right.legend(frameon=False, fontsize=5.5, loc="lower left")
        fig.suptitle(f"{name}  ({' × '.join(map(str, first['shape']))}; top {len(first['merged_singular_values'])} "
                     "singular values)", fontsize=7)
        fig.tight_layout()
        _save(fig, paths)


def effective_rank(diagnostics: Mapping[str, str | Path], layer: str, *paths: str | Path) -> None:
    """Effective rank (Roy & Vetterli) of the merged update of the spectra figure's kind of matrix (e.g. fc1) in every
    encoder and decoder layer, per merge; grey dashed: mean over the domains' task vectors."""
    data = _load_diagnostics(diagnostics)
    chosen = choose_layer(next(iter(data.values())).keys(), layer)
    match = _LAYER.search(chosen)
    kind = match.group(3) if match else None
    with plt.rc_context(PAPER_STYLE):
        stacks = ("encoder", "decoder")
        fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.4), sharey=True)
        for ax, stack in zip(axes, stacks):
            first = next(iter(data.values()))
            layers = sorted((int(m.group(2)), n) for n in first if (m := _LAYER.search(n))
                            and m.group(1) == stack and (kind is None or m.group(3) == kind))
            if kind is None:  # a chosen tensor outside the layer stacks: every matrix of the stack, mean per layer
                layers = sorted({(int(m.group(2)), n) for n in first if (m := _LAYER.search(n)) and m.group(1) == stack})
            x = sorted({i for i, _ in layers})
            task_mean = [np.mean([np.mean(first[n]["task_effective_rank"]) for i, n in layers if i == j]) for j in x]
            ax.plot(x, task_mean, color="#999999", linestyle="--", linewidth=1, marker="x", markersize=3,
                    label="domain task vectors (mean)")
            for branch_id, tensors in data.items():
                values = [np.mean([tensors[n]["merged_effective_rank"] for i, n in layers if i == j and n in tensors])
                          for j in x]
                ax.plot(x, values, markersize=2.5, linewidth=1.1, label=_branch_label(branch_id),
                        **_branch_style(branch_id, data))
            ax.set_title(f"{stack}: {kind or 'all matrices (mean)'}")
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
            if len(x) <= 12:
                ax.set_xticks(x)
        axes[0].set_ylabel("effective rank")
        axes[1].legend(frameon=False, fontsize=5.5)
        fig.tight_layout()
        _save(fig, paths)


#: name -> function; what each reads is its kind in asrmerge.workflow.figure_plan (FIGURE_KINDS): "table" fn(frame, png, pdf);
#: "sweep" fn(frame, branch_ids, png, pdf); "selections" fn({branch: path}, png, pdf); "diagnostics"
#: fn({branch: path}, layer, png, pdf).
FIGURES: dict[str, Callable] = {
    "wer_by_system": wer_by_system,
    "id_vs_ood": id_vs_ood,
    "heatmap": heatmap,
    "lambda_curves": lambda_curves,
    "beta_sweep": beta_sweep,
    "spectra": spectra,
    "effective_rank": effective_rank,
}


def draw_figure(
    name: str, paths: Sequence[str | Path], table: str | Path | None = None, branches: Sequence[str] = (),
    branch_files: Mapping[str, str | Path] | None = None, layer: str | None = None,
) -> None:
    """Draw figure `name` (the figure rule, `asrmerge figure`) from what asrmerge.workflow.figure_plan says it reads: the
    per-set table, the branch ids it shows, their selection records or diagnostics, the spectra's layer."""
    arguments = {
        "table": lambda: (pd.read_csv(table),),
        "sweep": lambda: (pd.read_csv(table), branches),
        "selections": lambda: (branch_files,),
        "diagnostics": lambda: (branch_files, layer),
    }[FIGURE_KINDS[name]]()
    FIGURES[name](*arguments, *paths)
