rule statistics:
    """Gram matrices of the linear layers' inputs (regmean) or the diagonal Fisher information (fisher) of one
    domain's fine-tune over a draw of its train split, for the data-aware merges."""
    input:
        model=result(layout.MODEL, model=layout.finetuned_system("{domain}")),
        train=lambda wc: [manifest(wc.domain)],
    output:
        result(layout.STATISTICS),
    log:
        f"{LOGS}/statistics/{{domain}}/{{kind}}.log",
    benchmark:
        f"{BENCHMARKS}/statistics/{{domain}}/{{kind}}.tsv"
    wildcard_constraints:
        kind=one_of(STATISTICS_KINDS),
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        options=config["statistics"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/statistics.py"
