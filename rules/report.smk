localrules:
    table,
    figure,


rule table:
    """WER/CER per system and test set, and the paper's layout with significance, re-aggregated from the counts."""
    input:
        expand(f"{RESULTS}/scores/{{system}}.json", system=SYSTEMS),
    output:
        csv=f"{RESULTS}/tables/wer.csv",
        markdown=f"{RESULTS}/tables/wer.md",
        paper_csv=f"{RESULTS}/tables/paper.csv",
        paper_markdown=f"{RESULTS}/tables/paper.md",
        paper_latex=f"{RESULTS}/tables/paper.tex",
    params:
        systems=SYSTEMS,
        roles={name: spec["role"] for name, spec in config["corpus"]["sets"].items()},
        reference="joint",
    log:
        f"{LOGS}/tables/wer.log",
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/table.py"


rule figure:
    """One figure from the table or the selection curves (PNG and PDF)."""
    input:
        table=f"{RESULTS}/tables/wer.csv",
        selections=expand(f"{RESULTS}/selection/{{branch}}.json", branch=BRANCHES),
    output:
        png=f"{RESULTS}/figures/{{figure}}.png",
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    params:
        branches=list(BRANCHES),
    log:
        f"{LOGS}/figures/{{figure}}.log",
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/figure.py"
