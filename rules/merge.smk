rule merge:
    """One merged task vector per method and hyperparameter point; lambda is applied later (diagnostics: rule
    merge_diagnostics)."""
    input:
        base=result(layout.BASE_MODEL),
        task_vectors=expand(result(layout.TASK_VECTOR), domain=DOMAINS),
        statistics=lambda wc: EXPERIMENT.statistics_files(branch(wc).id),
    output:
        out=result(layout.MERGED_TASK_VECTOR, branch=layout.BRANCH),
    log:
        layout.job_log(RESULTS, "merge"),
    benchmark:
        layout.job_benchmark(RESULTS, "merge")
    priority: 6
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        **MERGE_SETTINGS,
        method=lambda wc: branch(wc).method,
        params=lambda wc: branch(wc).params,
    script:
        "../scripts/stage.py"


rule merge_diagnostics:
    """Spectra, effective ranks and sign conflicts of a merged task vector (for the figures' merges only)."""
    input:
        merged=result(layout.MERGED_TASK_VECTOR, branch=layout.BRANCH),
        task_vectors=expand(result(layout.TASK_VECTOR), domain=DOMAINS),
        spectra=expand(result(layout.TASK_SPECTRA), domain=DOMAINS),
    output:
        out=result(layout.MERGE_DIAGNOSTICS, branch=layout.BRANCH),
    log:
        layout.job_log(RESULTS, "merge_diagnostics"),
    benchmark:
        layout.job_benchmark(RESULTS, "merge_diagnostics")
    priority: 2
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    script:
        "../scripts/stage.py"


rule export_merged:
    """A merge at its chosen lambda as a transformers model folder with its model card and recipe
    (merge.export_models: all)."""
    input:
        unpack(lambda wc: export_inputs([branch(wc).id])),
    output:
        out=directory(result(layout.MERGED_MODEL, branch=layout.BRANCH)),
    log:
        layout.job_log(RESULTS, "export_merged"),
    benchmark:
        layout.job_benchmark(RESULTS, "export_merged")
    priority: 1
    conda:
        "../envs/asrmerge.yaml"
    params:
        branches=lambda wc: [branch(wc).id],
        candidates=lambda wc: export_candidates([branch(wc).id]),
        metric=config["selection"]["metric"],
        settings=MERGE_SETTINGS,
        card=EXPERIMENT.model_card(),
    script:
        "../scripts/stage.py"


rule export_best_merge:
    """The merge branch with the lowest validation error at its chosen lambda, as a model folder with its model card
    and recipe (export_models: best)."""
    input:
        **export_inputs(BRANCHES),
    output:
        out=directory(result(layout.BEST_MERGED_MODEL)),
    log:
        layout.job_log(RESULTS, "export_best_merge"),
    benchmark:
        layout.job_benchmark(RESULTS, "export_best_merge")
    priority: 1
    conda:
        "../envs/asrmerge.yaml"
    params:
        branches=list(BRANCHES),
        candidates=export_candidates(BRANCHES),
        metric=config["selection"]["metric"],
        settings=MERGE_SETTINGS,
        card=EXPERIMENT.model_card(),
    script:
        "../scripts/stage.py"
