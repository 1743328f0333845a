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
    script:
        "../scripts/table.py"


rule figure:
    """WER per system on each test group."""
    input:
        f"{RESULTS}/tables/wer.csv",
    output:
        png=f"{RESULTS}/figures/wer_by_system.png",
        pdf=f"{RESULTS}/figures/wer_by_system.pdf",
    log:
        f"{LOGS}/figures/wer_by_system.log",
    script:
        "../scripts/figure.py"
