# Tables and figures, and what `snakemake --report report.html` shows of them (captions under report/).
# Which figures a config supports and which cached files each reads: asrmerge/workflow/figure_plan.py.
from asrmerge.workflow.experiment import PAPER_LAYOUT, PER_TEST_SET
from asrmerge.workflow.figure_plan import TITLES


localrules:
    table,
    figure,


# report(...) of the tables: caption and place in the report; `labels` tell the formats apart.
PAPER_TABLE = dict(caption="../report/paper_table.rst", category="Tables", subcategory=PAPER_LAYOUT)
SET_TABLE = dict(caption="../report/per_set_table.rst", category="Tables", subcategory=PER_TEST_SET)


rule table:
    """Error rates per system and test set, and the paper's layout with significance, re-aggregated from the counts."""
    input:
        # as files for the DAG; the stage reads them by name from the params
        score_files=list(score_files().values()),
        selection_files=list(selection_files().values()),
        test_manifests=manifests(TEST_SETS),
    output:
        csv=report(
            result(layout.TABLE, name=layout.TABLE_FILES["csv"]),
            **SET_TABLE,
            labels={"format": "CSV, long: all counts"},
        ),
        markdown=report(
            result(layout.TABLE, name=layout.TABLE_FILES["markdown"]), **SET_TABLE, labels={"format": "Markdown"}
        ),
        latex=report(result(layout.TABLE, name=layout.TABLE_FILES["latex"]), **SET_TABLE, labels={"format": "LaTeX"}),
        wide_csv=report(
            result(layout.TABLE, name=layout.TABLE_FILES["wide_csv"]),
            **SET_TABLE,
            labels={"format": "CSV, wide, p-values"},
        ),
        html=report(result(layout.TABLE, name=layout.TABLE_FILES["html"]), **SET_TABLE, labels={"format": "HTML"}),
        paper_csv=report(
            result(layout.TABLE, name=layout.TABLE_FILES["paper_csv"]),
            **PAPER_TABLE,
            labels={"format": "CSV with p-values"},
        ),
        paper_markdown=report(
            result(layout.TABLE, name=layout.TABLE_FILES["paper_markdown"]),
            **PAPER_TABLE,
            labels={"format": "Markdown"},
        ),
        paper_latex=report(
            result(layout.TABLE, name=layout.TABLE_FILES["paper_latex"]), **PAPER_TABLE, labels={"format": "LaTeX"}
        ),
        paper_html=report(
            result(layout.TABLE, name=layout.TABLE_FILES["paper_html"]), **PAPER_TABLE, labels={"format": "HTML"}
        ),
    log:
        layout.job_log(RESULTS, "table"),
    benchmark:
        layout.job_benchmark(RESULTS, "table")
    priority: 2
    conda:
        "../envs/asrmerge.yaml"
    params:
        scores=score_files(),
        selections=selection_files(),
        manifests={t: manifest(t) for t in TEST_SETS},
        roles=EXPERIMENT.roles(),
        reference=EXPERIMENT.reference,
        metrics=EXPERIMENT.metrics(),
    script:
        "../scripts/stage.py"


rule figure:
    """One figure (PNG and PDF) from the cached files it shows: the table, selection curves or merge diagnostics."""
    input:
        unpack(lambda wc: EXPERIMENT.figure_job(wc.figure).inputs),
    output:
        png=report(
            result(layout.FIGURE, ext="png"),
            caption="../report/figure.rst",
            category="Figures",
            subcategory=lambda wc: TITLES[wc.figure],
            labels={"figure": "{figure}", "format": "PNG"},
        ),
        pdf=result(layout.FIGURE, ext="pdf"),
    log:
        layout.job_log(RESULTS, "figure"),
    benchmark:
        layout.job_benchmark(RESULTS, "figure")
    priority: 1
    conda:
        "../envs/asrmerge.yaml"
    params:
        branches=lambda wc: EXPERIMENT.figure_job(wc.figure).branches,
        branch_files=lambda wc: EXPERIMENT.figure_job(wc.figure).branch_files,
        layer=lambda wc: EXPERIMENT.figure_job(wc.figure).layer,
    script:
        "../scripts/stage.py"
