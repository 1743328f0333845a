rule statistics:
    """Gram matrices of the linear layers' inputs (regmean) or the diagonal Fisher information (fisher) of one
    domain's fine-tune over a draw of its train split, for the data-aware merges."""
    input:
        model=result(layout.MODEL, model=layout.finetuned_system("{domain}")),
        train=lambda wc: [manifest(wc.domain)],
    output:
        out=result(layout.STATISTICS),
    log:
        layout.job_log(RESULTS, "statistics"),
    benchmark:
        layout.job_benchmark(RESULTS, "statistics")
    wildcard_constraints:
        kind=one_of(PER_TASK_STATISTICS),
    priority: 7
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        options=config["statistics"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/stage.py"


rule adamerging_coefficients:
    """AdaMerging's task-wise or layer-wise coefficients, learned on the domains' validation audio (not its labels)."""
    input:
        base=result(layout.BASE_MODEL),
        task_vectors=expand(result(layout.TASK_VECTOR), domain=DOMAINS),
        validation=manifests(DOMAINS),
    output:
        out=result(layout.MERGE_COEFFICIENTS, branch=layout.BRANCH),
        summary=result(layout.MERGE_COEFFICIENTS_SUMMARY, branch=layout.BRANCH),
    log:
        layout.job_log(RESULTS, "adamerging_coefficients"),
    benchmark:
        layout.job_benchmark(RESULTS, "adamerging_coefficients")
    wildcard_constraints:
        method="adamerging",
    priority: 7
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        options=lambda wc: branch(wc).params,
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/stage.py"
