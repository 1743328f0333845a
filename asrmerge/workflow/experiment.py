"""One configuration's run: its sets, systems and merge branches, and the file of each under the results folder.

rules/common.smk derives the workflow's lists and input functions from an `Experiment`, and the `asrmerge` commands
that act on a whole run (table, figure, report-check) build the same one from the same config file, so a stage run
by hand reads and writes exactly the files the rule would.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asrmerge import layout
from asrmerge.data.manifest import read_manifest
from asrmerge.workflow.config import (
    MergeBranch,
    check_config_file,
    domains,
    merge_branches,
    scored_sets,
    sets_with_role,
    validate_config,
)
from asrmerge.merging.registry import get_method
from asrmerge.models.source import is_hub_id
from asrmerge.workflow import figure_plan as plan

#: The report's two groups of tables (subcategories of "Tables") and the outputs each shows.
PER_TEST_SET, PAPER_LAYOUT = "per test set", "paper layout"
TABLE_GROUPS = {
    PER_TEST_SET: ("csv", "markdown", "latex", "wide_csv", "html"),
    PAPER_LAYOUT: ("paper_csv", "paper_markdown", "paper_latex", "paper_html"),
}
#: The default experiment: the workflow reads it unless a --configfile replaces it (Snakefile).
DEFAULT_CONFIG = "config.yaml"


@dataclass(frozen=True)
class FigureJob:
    """What the figure rule reads and passes for one figure (asrmerge.workflow.figure_plan decides)."""

    name: str
    inputs: dict[str, str | list[str]]
    branches: list[str]  # ids of the merge branches it shows
    branch_files: dict[str, str]  # branch id -> the selection record or diagnostics file it reads
    layer: str | None  # the spectra's layer (diagnostics figures only)


class Experiment:
    """A validated config and everything the workflow derives from it."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.results: str = config["results"]
        self.domains: list[str] = domains(config)
        self.test_sets: list[str] = scored_sets(config)
        self.general_sets: list[str] = sets_with_role(config, "general")
        self.branches: dict[str, MergeBranch] = {branch.id: branch for branch in merge_branches(config)}
        #: Full-FT is left out with `finetune.joint: null`; significance is then tested against zero-shot.
        has_joint = config["finetune"]["joint"] is not None
        self.reference = layout.JOINT if has_joint else layout.BASE
        baselines = [layout.BASE, layout.JOINT] if has_joint else [layout.BASE]
        self.model_systems = baselines + [layout.finetuned_system(d) for d in self.domains]
        self.merged_systems = [layout.merged_system(branch_id) for branch_id in self.branches]
        self.systems = self.model_systems + self.merged_systems
        self.figures: list[str] = plan.requested_figures(config, self.branches.values())

    @classmethod
    def load(cls, configfile: str | os.PathLike[str] = DEFAULT_CONFIG, workdir: str | os.PathLike[str] = ".") -> Experiment:
        """The experiment of a config file, checked as the workflow checks it (relative paths from `workdir`)."""
        return cls(validate_config(check_config_file(configfile), workdir=workdir))

    def result(self, template: str, **fields: str) -> str:
        """A path under the results folder (asrmerge.layout); fields not given stay Snakemake wildcards."""
        return layout.path(self.results, template, **fields)

    def manifest(self, set_name: str) -> str:
        return self.result(layout.MANIFEST, set=set_name)

    def manifests(self, set_names) -> list[str]:
        return [self.manifest(s) for s in set_names]

    def roles(self) -> dict[str, str]:
        """Set name -> its role."""
        return {name: spec["role"] for name, spec in self.config["corpus"]["sets"].items()}

    def metrics(self) -> dict[str, str]:
        """Set name -> the metric its config names (`metric:`); the others are scored by their languages."""
        return {name: spec["metric"] for name, spec in self.config["corpus"]["sets"].items() if "metric" in spec}

    def hypotheses(self, system: str) -> dict[str, str]:
        """Test set -> the system's hypothesis file."""
        return {t: self.result(layout.HYPOTHESES, system=system, test_set=t) for t in self.test_sets}

    def test_set_manifests(self) -> dict[str, str]:
        """Test set -> its manifest: what a decode job reads (into the system's HYPOTHESES_DIR)."""
        return {t: self.manifest(t) for t in self.test_sets}

    def score_files(self) -> dict[str, str]:
        """System id -> its score file, for every system of the config."""
        return {s: self.result(layout.SCORES, system=s) for s in self.systems}

    def selection_files(self) -> dict[str, str]:
        """Merge branch id -> its selection record."""
        return {b: self.result(layout.SELECTION, branch=b) for b in self.branches}

    def statistics_files(self, branch_id: str) -> list[str]:
        """The statistics files a merge branch's method reads: per domain (in the task vectors' order), AdaMerging's
        coefficients of the branch, or none."""
        kind = get_method(self.branches[branch_id].method).statistics
        if kind is None:
            return []
        if kind == "coefficients":
            return [self.result(layout.MERGE_COEFFICIENTS, branch=branch_id)]
        return [self.result(layout.STATISTICS, domain=d, kind=kind) for d in self.domains]

    def task_vectors(self) -> list[str]:
        """Every domain's task vector, in the domains' order."""
        return [self.result(layout.TASK_VECTOR, domain=d) for d in self.domains]

    def merge_settings(self) -> dict[str, Any]:
        """The merge job's settings (rule merge), which the recipe of an exported merge records."""
        merge = self.config["merge"]
        return {"seed": self.config["seed"], "device": merge["device"], "svd_dtype": merge["svd_dtype"],
                "exclude_from_svd": merge["exclude_from_svd"]}

    def export_candidates(self, branch_ids) -> dict[str, dict[str, Any]]:
        """Branch id -> its method, parameters, merged task vector, selection record, score file and statistics:
        what an export chooses from, and what its model card and recipe say."""
        unknown = [b for b in branch_ids if b not in self.branches]
        if unknown:
            raise ValueError(f"no merge branch {unknown[0]!r} in this config (branches: {', '.join(self.branches)})")
        return {
            b: {
                "method": self.branches[b].method,
                "params": self.branches[b].params,
                "task_vector": self.result(layout.MERGED_TASK_VECTOR, branch=b),
                "selection": self.result(layout.SELECTION, branch=b),
                "scores": self.result(layout.SCORES, system=layout.merged_system(b)),
                "statistics": self.statistics_files(b),
            }
            for b in branch_ids
        }

    def export_folder(self, branch_ids) -> str:
        """Where an export of `branch_ids` goes, as the export rules write it: the best one's folder for every branch
        under `merge.export_models: best` (one branch or several) and for several branches, the branch's own folder
        for one branch otherwise."""
        best_of_all = self.config["merge"]["export_models"] == "best" and set(branch_ids) == set(self.branches)
        if len(branch_ids) == 1 and not best_of_all:
            return self.result(layout.MERGED_MODEL, branch=branch_ids[0])
        return self.result(layout.BEST_MERGED_MODEL)

    def model_card(self) -> dict[str, Any]:
        """What the model card of an exported merge says beside its results (asrmerge.report.model_card)."""
        base = self.config["base_model"]
        pretrained = base["source"] == "pretrained"
        languages = {language for d in self.domains for language in self.languages_of(d) if isinstance(language, str)}
        return {"name": Path(self.results).name, "hub_base": pretrained and is_hub_id(base["path"]),
                "base_model": base["path"] if pretrained else "the asrmerge demo foundation (pretrained by the run)",
                "domains": self.domains, "languages": sorted({language.split("-")[0] for language in languages}),
                "roles": self.roles(), "metrics": self.metrics(),
                "manifests": {t: self.manifest(t) for t in self.test_sets},
                "datasets": {name: spec["dataset"] for name, spec in self.config["corpus"]["sets"].items()
                             if "dataset" in spec}}

    def table_files(self) -> dict[str, str]:
        """Output name (layout.TABLE_FILES) -> path of each table the table rule writes."""
        return {key: self.result(layout.TABLE, name=name) for key, name in layout.TABLE_FILES.items()}

    def figure_files(self, name: str) -> dict[str, str]:
        """Format -> path of one figure."""
        return {ext: self.result(layout.FIGURE, figure=name, ext=ext) for ext in layout.FIGURE_FORMATS}

    def languages_of(self, name: str) -> set[Any]:
        """The languages of a set: its spec's or its dataset's, or those of its manifest's rows (unknown, None, while
        the manifest is unreadable, whose corpus job names the row at fault, or when a dataset column gives them)."""
        spec = self.config["corpus"]["sets"][name]
        if "dataset" in spec:  # its configured language, or unknown (None) when a column gives each row's
            return {spec["dataset"]["language"]}
        if "manifest" not in spec:
            language = spec.get("language")
            return set(language) if isinstance(language, list) else {language}
        try:
            return {row.language for row in read_manifest(spec["manifest"])}
        except (OSError, ValueError):
            return {None}

    @property
    def generation(self) -> dict[str, Any]:
        """How the run transcribes, for the generation config of every model folder it writes: the language of its
        domains (None, detected, when they do not declare one language), `evaluation.num_beams` and the token cap
        `evaluation.max_new_tokens`."""
        languages = {language for d in self.domains for language in self.languages_of(d)}
        language = languages.pop() if len(languages) == 1 else None
        return {"language": language if isinstance(language, str) else None,
                "num_beams": self.config["evaluation"]["num_beams"],
                "max_new_tokens": self.config["evaluation"]["max_new_tokens"]}

    @functools.cached_property
    def spectrum_layer(self) -> str:
        return plan.spectrum_layer(self.config)

    def figure_job(self, name: str) -> FigureJob:
        if name not in self.figures:
            raise ValueError(f"figure {name!r} is not one this config supports: {', '.join(self.figures)}")
        branches = self.branches.values()
        return FigureJob(
            name=name,
            inputs=plan.figure_inputs(name, branches, self.results),
            branches=plan.figure_branches(name, branches),
            branch_files=plan.branch_files(name, branches, self.results),
            layer=self.spectrum_layer if name in plan.DIAGNOSTICS_FIGURES else None,
        )

    def report_items(self) -> dict[str, dict[str, list[str]]]:
        """What `snakemake --report` shows of this run: category -> subcategory -> result files."""
        tables = self.table_files()
        return {
            "Tables": {group: sorted(tables[key] for key in keys) for group, keys in TABLE_GROUPS.items()},
            "Figures": {plan.TITLES[f]: [self.figure_files(f)["png"]] for f in self.figures},
        }
