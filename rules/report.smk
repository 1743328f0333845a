# Tables and figures, and what `snakemake --report report.html` shows of them (captions under report/).
# Which figures a config supports and which cached files each reads: asrmerge/report/plan.py.
from asrmerge.report.plan import (
    DIAGNOSTICS_FIGURES,
    TITLES,
    branch_files,
    figure_branches,
    figure_inputs,
    spectrum_layer,
)

SPECTRUM_LAYER = spectrum_layer(config)  # "auto": fc1 of the middle decoder layer


localrules:
    table,
    figure,


# report(...) of the tables: caption and place in the report; `labels` tell the formats apart.
PAPER_TABLE = dict(caption="../report/paper_table.rst", category="Tables", subcategory="paper layout")
SET_TABLE = dict(caption="../report/per_set_table.rst", category="Tables", subcategory="per test set")


rule table:
    """Error rates per system and test set, and the paper's layout with significance, re-aggregated from the counts."""
    input:
        scores=list(score_files().values()),
        selections=list(selection_files().values()),
        manifests=manifests(TEST_SETS),
    output:
        csv=report(result(layout.TABLE, name="wer.csv"), **SET_TABLE, labels={"format": "CSV, long: all counts"}),
        markdown=report(result(layout.TABLE, name="wer.md"), **SET_TABLE, labels={"format": "Markdown"}),
        latex=report(result(layout.TABLE, name="wer.tex"), **SET_TABLE, labels={"format": "LaTeX"}),
        wide_csv=report(
            result(layout.TABLE, name="wer_wide.csv"), **SET_TABLE, labels={"format": "CSV, wide, p-values"}
        ),
        html=report(result(layout.TABLE, name="wer.html"), **SET_TABLE, labels={"format": "HTML"}),
        paper_csv=report(result(layout.TABLE, name="paper.csv"), **PAPER_TABLE, labels={"format": "CSV with p-values"}),
        paper_markdown=report(result(layout.TABLE, name="paper.md"), **PAPER_TABLE, labels={"format": "Markdown"}),
        paper_latex=report(result(layout.TABLE, name="paper.tex"), **PAPER_TABLE, labels={"format": "LaTeX"}),
        paper_html=report(result(layout.TABLE, name="paper.html"), **PAPER_TABLE, labels={"format": "HTML"}),
    log:
        f"{LOGS}/tables/wer.log",
    benchmark:
        f"{BENCHMARKS}/tables/wer.tsv"
    conda:
        "../envs/asrmerge.yaml"
    params:
        scores=score_files(),
        selections=selection_files(),
        manifests={t: manifest(t) for t in TEST_SETS},
        roles={name: spec["role"] for name, spec in config["corpus"]["sets"].items()},
        reference=layout.JOINT,
    script:
        "../scripts/table.py"


rule figure:
    """One figure (PNG and PDF) from the cached files it shows: the table, selection curves or merge diagnostics."""
    input:
        unpack(lambda wc: figure_inputs(wc.figure, BRANCHES.values(), RESULTS)),
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
        f"{LOGS}/figures/{{figure}}.log",
    benchmark:
        f"{BENCHMARKS}/figures/{{figure}}.tsv"
    conda:
        "../envs/asrmerge.yaml"
    params:
        branches=lambda wc: figure_branches(wc.figure, BRANCHES.values()),
        branch_files=lambda wc: branch_files(wc.figure, BRANCHES.values(), RESULTS),
        layer=lambda wc: SPECTRUM_LAYER if wc.figure in DIAGNOSTICS_FIGURES else None,
    script:
        "../scripts/figure.py"
