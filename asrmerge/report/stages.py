"""The stages of the report layer, declared as those of the workflow (asrmerge.workflow.stage): a run's exported
merges, its tables and its figures. Each acts on a whole run: its command derives what the rule passes from the
run's config (`--configfile`) through asrmerge.workflow.experiment.Experiment, as the rules do. Their libraries
(pandas, matplotlib) are imported when a stage runs, not when the stages are listed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from asrmerge import layout
from asrmerge.workflow.stage import FromRun, Input, OutputFiles, Pairs, Value, Folder, setting, stage
from asrmerge.workflow.stages import PathLike


@stage("export-merge", rules=("export_merged", "export_best_merge"),
       help="a run's merge at its chosen λ as a model folder, with its model card and recipe")
def export_merge(
    branches: Annotated[Sequence[str], Value("the merge branches to choose from (the run's are all of its branches)",
                                             many=True, of=lambda run, values: list(run.branches))],
    candidates: Annotated[Mapping[str, Mapping[str, Any]], FromRun(
        "branch id -> its method, parameters, merged task vector, selection record, scores and statistics",
        of=lambda run, values: run.export_candidates(values["branches"]))],
    base: Annotated[PathLike, Input("the run's base model", of=lambda run, values: run.result(layout.BASE_MODEL))],
    domain_task_vectors: Annotated[Sequence[PathLike], Input("every domain's task vector (the recipe names them)",
                                                             many=True, of=lambda run, values: run.task_vectors())],
    settings: Annotated[Mapping[str, Any], FromRun("the merge job's seed, device, svd_dtype and exclude_from_svd",
                                                   of=lambda run, values: run.merge_settings())],
    metric: Annotated[str, FromRun("the validation metric that chooses", of=setting("selection.metric"))],
    card: Annotated[Mapping[str, Any], FromRun("what the model card says beside the results",
                                               of=lambda run, values: run.model_card())],
    out: Annotated[PathLike, Folder("model folder to write (the run's: merged_models/BRANCH for one branch, "
                                    "merged_models/best for several)",
                                    of=lambda run, values: run.export_folder(values["branches"]))],
) -> Path:
    """The branch of `candidates` (those of `branches`) with the lowest validation error, at its chosen λ, as a
    transformers model folder with its model card and its recipe (asrmerge.report.model_card.export_merge)."""
    from asrmerge.report.model_card import export_merge as export

    return export(candidates, base, list(domain_task_vectors), settings, metric, card, out)


@stage("table", rules=("table",), help="a run's per-test-set and paper-layout tables, from its error counts")
def table(
    scores: Annotated[Mapping[str, PathLike], Pairs("SYSTEM=FILE score files",
                                                    of=lambda run, values: run.score_files())],
    selections: Annotated[Mapping[str, PathLike], Pairs("BRANCH=FILE selection records",
                                                        of=lambda run, values: run.selection_files())],
    manifests: Annotated[Mapping[str, PathLike], Pairs("SET=FILE test-set manifests",
                                                       of=lambda run, values: run.test_set_manifests())],
    roles: Annotated[Mapping[str, str], FromRun("set -> role", of=lambda run, values: run.roles())],
    reference: Annotated[str, FromRun("the system significance is tested against",
                                      of=lambda run, values: run.reference)],
    metrics: Annotated[Mapping[str, str], FromRun("set -> the metric its config names",
                                                  of=lambda run, values: run.metrics())],
    outputs: Annotated[Mapping[str, PathLike], OutputFiles("the tables: asrmerge.layout.TABLE_FILES' keys -> paths",
                                                           of=lambda run, values: run.table_files())],
) -> None:
    """Error rates per system and test set, and the paper's layout with significance, re-aggregated from the
    counts (asrmerge.report.tables.write_run_tables)."""
    from asrmerge.report.tables import write_run_tables

    write_run_tables(scores, selections, manifests, roles, reference, outputs, metrics)


def _figure_job(run: Any, values: Mapping[str, Any]) -> Any:
    return run.figure_job(values["figure"])


@stage("figure", rules=("figure",), help="draw one of a run's figures, PNG and PDF, from the cached files it shows")
def figure(
    figure: Annotated[str, Value("the figure to draw (one the config supports: asrmerge.workflow.figure_plan)")],
    outputs: Annotated[Mapping[str, PathLike], OutputFiles("format -> file",
                                                           of=lambda run, values: run.figure_files(values["figure"]))],
    branches: Annotated[Sequence[str], FromRun("the merge branches it shows",
                                               of=lambda run, values: _figure_job(run, values).branches)],
    branch_files: Annotated[Mapping[str, PathLike], FromRun(
        "branch -> the selection record or diagnostics it reads",
        of=lambda run, values: _figure_job(run, values).branch_files)],
    layer: Annotated[str | None, FromRun("the spectra's layer (diagnostics figures)",
                                         of=lambda run, values: _figure_job(run, values).layer)],
    table: Annotated[PathLike | None, Input("the per-set table (figures drawn from it)",
                                            of=lambda run, values: _figure_job(run, values).inputs.get("table"),
                                            rule_may_omit=True)] = None,
) -> None:
    """Draw the figure `figure` (asrmerge.report.figures.draw_figure) from what asrmerge.workflow.figure_plan says it
    reads."""
    from asrmerge.report.figures import draw_figure

    draw_figure(figure, list(outputs.values()), table=table, branches=branches, branch_files=branch_files,
                layer=layer)
