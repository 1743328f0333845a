"""Which figures a configuration supports, and which cached files each one reads.

The workflow asks this module at parse time (rules/common.smk: FIGURES; rules/report.smk: the figure rule's inputs
and params), so a figure is requested only when the config has what it shows, and every figure depends only on the
files it reads: changing one merge's hyperparameters reruns the figures that show that merge, not the others.

Figures (asrmerge.report.figures draws them):
    wer_by_system   bars of EP ID / EP OOD / English per system          tables/wer.csv
    id_vs_ood       ID vs OOD trade-off scatter, one point per system     tables/wer.csv
    heatmap         system x test set error rates                        tables/wer.csv
    lambda_curves   validation WER against lambda, chosen lambda marked   selection/{branch}.json   (any merge)
    beta_sweep      BoostedTSV-M ID and OOD test WER against beta         tables/wer.csv  (a boosted_tsv_m beta sweep)
    spectra         singular values of one layer's merged update          merges/{branch}/diagnostics.json
    effective_rank  effective rank of the merged update per layer         merges/{branch}/diagnostics.json
The last two need Task Arithmetic, TSV-M, BoostedTSV-M or Iso-C in the config and merge.diagnostics on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from asrmerge import layout

TABLE_FIGURES = ("wer_by_system", "id_vs_ood", "heatmap")
SELECTION_FIGURES = ("lambda_curves",)
SWEEP_FIGURES = ("beta_sweep",)
DIAGNOSTICS_FIGURES = ("spectra", "effective_rank")
ALL_FIGURES = TABLE_FIGURES + SELECTION_FIGURES + SWEEP_FIGURES + DIAGNOSTICS_FIGURES
#: What each figure is drawn from (asrmerge.report.figures.draw_figure passes it that).
FIGURE_KINDS = {
    **dict.fromkeys(TABLE_FIGURES, "table"), **dict.fromkeys(SELECTION_FIGURES, "selections"),
    **dict.fromkeys(SWEEP_FIGURES, "sweep"), **dict.fromkeys(DIAGNOSTICS_FIGURES, "diagnostics"),
}

#: The rank-collapse picture compares these methods (the seed paper's Fig.: TA, TSV-M, BoostedTSV-M, Iso-C).
SPECTRUM_METHODS = ("task_arithmetic", "tsv_m", "boosted_tsv_m", "iso_c")
SWEEP_METHOD = "boosted_tsv_m"
SWEEP_PARAM = "beta"
#: The paper's best beta: highlighted in the sweep, and the BoostedTSV-M shown in the spectra.
HIGHLIGHTED_BETA = 0.3
#: Layer of the spectra figure: "auto" = the `fc1.weight` of the middle decoder layer (a tensor name or a regular
#: expression selects another; the effective-rank figure follows the same kind of matrix, fc1, across layers).
DEFAULT_SPECTRUM_LAYER = "auto"

TITLES = {
    "wer_by_system": "WER by system: EP ID, EP OOD, English",
    "id_vs_ood": "In-domain vs out-of-domain trade-off",
    "heatmap": "Error rate per system and test set",
    "lambda_curves": "Validation WER against λ",
    "beta_sweep": "BoostedTSV-M: β sweep",
    "spectra": "Singular-value spectra of one layer (rank collapse)",
    "effective_rank": "Effective rank of the merged update per layer",
}


class Branch(Protocol):
    method: str
    params: Mapping[str, Any]  # every hyperparameter, defaults filled in
    label: str

    @property
    def id(self) -> str: ...


def _others(branch: Branch, skip: str) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in branch.params.items() if k != skip))


def beta_sweeps(branches: Iterable[Branch]) -> list[list[Branch]]:
    """BoostedTSV-M branches grouped by every hyperparameter but beta; groups with >= 2 betas, sorted by beta."""
    groups: dict[tuple, list[Branch]] = {}
    for branch in branches:
        if branch.method == SWEEP_METHOD:
            groups.setdefault(_others(branch, SWEEP_PARAM), []).append(branch)
    sweeps = []
    for group in groups.values():
        if len({b.params[SWEEP_PARAM] for b in group}) >= 2:
            sweeps.append(sorted(group, key=lambda b: b.params[SWEEP_PARAM]))
    return sweeps


def spectrum_branches(branches: Iterable[Branch]) -> list[Branch]:
    """Branches of the spectrum methods, in SPECTRUM_METHODS order; of a beta sweep only the beta nearest 0.3."""
    branches = list(branches)
    chosen = []
    for method in SPECTRUM_METHODS:
        of_method = [b for b in branches if b.method == method]
        if method == SWEEP_METHOD:
            groups: dict[tuple, list[Branch]] = {}
            for b in of_method:
                groups.setdefault(_others(b, SWEEP_PARAM), []).append(b)
            of_method = [min(g, key=lambda b: abs(b.params[SWEEP_PARAM] - HIGHLIGHTED_BETA)) for g in groups.values()]
            of_method.sort(key=branches.index)
        chosen.extend(of_method)
    return chosen


def figure_branches(name: str, branches: Iterable[Branch]) -> list[str]:
    """Ids of the merge branches whose cached files (or rows) the figure shows."""
    branches = list(branches)
    if name in SELECTION_FIGURES:
        return [b.id for b in branches]
    if name in SWEEP_FIGURES:
        return [b.id for sweep in beta_sweeps(branches) for b in sweep]
    if name in DIAGNOSTICS_FIGURES:
        return [b.id for b in spectrum_branches(branches)]
    return []


def requested_figures(config: Mapping, branches: Iterable[Branch]) -> list[str]:
    """The figures this config supports, in ALL_FIGURES order."""
    branches = list(branches)
    figures = list(TABLE_FIGURES)
    if branches:
        figures += SELECTION_FIGURES
    if beta_sweeps(branches):
        figures += SWEEP_FIGURES
    if spectrum_branches(branches) and config.get("merge", {}).get("diagnostics", True):
        figures += DIAGNOSTICS_FIGURES
    return [f for f in ALL_FIGURES if f in figures]


def branch_files(name: str, branches: Iterable[Branch], results: str) -> dict[str, str]:
    """Branch id -> the cached file of that branch the figure reads (none for the figures drawn from the table)."""
    template = layout.SELECTION if name in SELECTION_FIGURES else layout.MERGE_DIAGNOSTICS
    if name not in SELECTION_FIGURES + DIAGNOSTICS_FIGURES:
        return {}
    return {b: layout.path(results, template, branch=b) for b in figure_branches(name, branches)}


def figure_inputs(name: str, branches: Iterable[Branch], results: str) -> dict[str, str | list[str]]:
    """Named inputs of the figure rule for one figure (paths under the results folder)."""
    if name in TABLE_FIGURES or name in SWEEP_FIGURES:
        return {"table": layout.path(results, layout.TABLE, name=layout.TABLE_FILES["csv"])}
    if name in SELECTION_FIGURES:
        return {"selections": list(branch_files(name, branches, results).values())}
    if name in DIAGNOSTICS_FIGURES:
        return {"diagnostics": list(branch_files(name, branches, results).values())}
    raise ValueError(f"unknown figure {name!r}; known: {', '.join(ALL_FIGURES)}")


def spectrum_layer(config: Mapping) -> str:
    """The layer of the spectra figure: config `report.spectrum_layer` when the schema has it, else "auto"."""
    return str((config.get("report") or {}).get("spectrum_layer") or DEFAULT_SPECTRUM_LAYER)
