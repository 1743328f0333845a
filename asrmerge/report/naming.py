"""Readable names of systems for tables and figures, their family and their order.

A system id is `base`, `joint`, `finetuned/{domain}` or `merged/{method}/{params}` (asrmerge.layout);
`{params}` is the branch label of asrmerge.workflow.config.merge_branches: "default" or the hyperparameters the config set,
e.g. "beta=0.3+orthogonaliser=svd" (asrmerge.layout.PARAM_SEPARATOR). Names follow the seed paper ("Zero-shot", "Full-FT", "TSV-M w/ NS", ...).
This module imports nothing heavy: it runs while Snakemake parses the workflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from asrmerge.layout import BASE, FINETUNED, JOINT, MERGED, PARAM_SEPARATOR, split_system
from asrmerge.layout import chosen_lambda as recorded_lambda

#: The composite ID-FT row: every domain scored by its own fine-tune (an oracle that needs one model per domain).
OWN_DOMAIN = f"{FINETUNED}/(own domain)"

METHOD_NAMES = {
    "model_soup": "Model Soup",
    "model_stock": "Model Stock",
    "karcher": "Karcher mean",
    "multislerp": "Multi-SLERP",
    "task_arithmetic": "Task Arithmetic",
    "ties": "TIES",
    "pcb": "PCB",
    "sce": "SCE",
    "dare": "DARE",
    "breadcrumbs": "Breadcrumbs",
    "della": "DELLA",
    "consensus_ta": "Consensus TA",
    "iso_c": "Iso-C",
    "iso_cts": "Iso-CTS",
    "tsv_m": "TSV-M",
    "boosted_tsv_m": "BoostedTSV-M",
    "star": "STAR",
    "regmean": "RegMean",
    "fisher": "Fisher merging",
    "adamerging": "AdaMerging",
    "knots": "KnOTS-TIES",
}
#: One colour per method in every figure. The methods of the paper's main table take the eight colours of the
#: Okabe–Ito palette (safe for the common colour-vision deficiencies, black left to the zero-shot model); the others
#: Paul Tol's muted palette. Baselines are greys.
METHOD_COLOURS = {
    "task_arithmetic": "#0072B2", "ties": "#56B4E9", "model_soup": "#009E73", "model_stock": "#E69F00",
    "tsv_m": "#CC79A7", "boosted_tsv_m": "#D55E00", "iso_c": "#F0E442", "karcher": "#882255",
    "iso_cts": "#117733", "pcb": "#44AA99", "sce": "#88CCEE", "dare": "#999933", "breadcrumbs": "#DDCC77",
    "della": "#AA4499", "consensus_ta": "#332288", "multislerp": "#CC6677", "star": "#661100",
    "regmean": "#6699CC", "fisher": "#997700", "adamerging": "#EE99AA",
    "knots": "#BBCC33",
}
BASELINE_COLOURS = {BASE: "#000000", JOINT: "#555555", OWN_DOMAIN: "#8c8c8c", FINETUNED: "#bbbbbb"}


def system_colour(system: str) -> str:
    """The colour of a system id (or of a bare method name) in every figure."""
    if system in METHOD_COLOURS:
        return METHOD_COLOURS[system]
    kind, name, _ = split_system(system)
    if kind == MERGED:
        return METHOD_COLOURS.get(name, "#7f7f7f")
    return BASELINE_COLOURS.get(system, BASELINE_COLOURS[FINETUNED])


PARAM_NAMES = {"beta": "β", "common_space_fraction": "common", "pcb_ratio": "ratio", "alpha": "α",
               "learning_rate": "lr"}
ORTHOGONALISERS = {"newton_schulz": "w/ NS", "svd": "w/ SVD"}

#: Row blocks of the tables, in order (merge families as in asrmerge.merging.registry.FAMILIES).
FAMILY_ORDER = ("baseline", "ID-FT", "parameter", "task_vector", "subspace", "data_aware", "other")
FAMILY_NAMES = {
    "baseline": "baselines", "ID-FT": "per-domain fine-tunes", "parameter": "parameter space",
    "task_vector": "task-vector space", "subspace": "task-vector subspace", "data_aware": "data-aware",
    "other": "other",
}


def parse_params(label: str) -> dict[str, str]:
    """"beta=0.3+orthogonaliser=svd" -> {"beta": "0.3", "orthogonaliser": "svd"}; "default" -> {}."""
    if label == "default":
        return {}
    return dict(part.split("=", 1) for part in label.split(PARAM_SEPARATOR))


def method_label(method: str, params_label: str = "default") -> str:
    """"TSV-M w/ NS", "TIES (density=0.2)", "BoostedTSV-M (β=0.3)": method name, orthogonaliser, other parameters."""
    params = parse_params(params_label)
    name = METHOD_NAMES.get(method, method)
    orthogonaliser = params.pop("orthogonaliser", None)
    if orthogonaliser:
        name += " " + ORTHOGONALISERS.get(orthogonaliser, f"w/ {orthogonaliser}")
    if params:
        name += " (" + ", ".join(f"{PARAM_NAMES.get(k, k)}={v}" for k, v in params.items()) + ")"
    return name


def system_label(system: str, chosen_lambda: float | None = None) -> str:
    """Row label: "Zero-shot", "Full-FT", "ID-FT: weather", "ID-FT (own domain)", "TIES (density=0.2), λ=0.6"."""
    if system == BASE:
        return "Zero-shot"
    if system == JOINT:
        return "Full-FT"
    if system == OWN_DOMAIN:
        return "ID-FT (own domain)"
    kind, name, params = split_system(system)
    if kind == FINETUNED:
        return f"ID-FT: {name}"
    if kind == MERGED:
        label = method_label(name, params)
        return label if chosen_lambda is None else f"{label}, λ={chosen_lambda:g}"
    return system


def method_family(method: str) -> str:
    """The registry family of a merge method ("other" for a name the registry does not know)."""
    from asrmerge.merging.registry import get_method  # imports torch: only when asked

    try:
        return get_method(method).family
    except ValueError:
        return "other"


def system_family(system: str) -> str:
    kind, name, _ = split_system(system)
    if kind == MERGED:
        return method_family(name)
    if kind == FINETUNED:
        return "ID-FT"
    return "baseline"


def ordered_systems(systems: Iterable[str], families: Mapping[str, str]) -> list[str]:
    """Baselines, then fine-tunes, then merges family by family; the given order within a family."""
    systems = list(systems)
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(systems, key=lambda s: (rank.get(families[s], len(rank)), systems.index(s)))


def chosen_lambda(selection: Mapping) -> float | None:
    """The λ of a selection record, or None when its grid had a single value (nothing was chosen)."""
    if len(selection.get("curve", [])) <= 1:
        return None
    return recorded_lambda(selection)
