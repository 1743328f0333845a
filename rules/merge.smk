rule merge:
    """One merged task vector per method and hyperparameter point; lambda is applied later."""
    input:
        base=result(layout.BASE_MODEL),
        task_vectors=expand(result(layout.TASK_VECTOR), domain=DOMAINS),
    output:
        task_vector=result(layout.MERGED_TASK_VECTOR, branch=layout.BRANCH),
        diagnostics=result(layout.MERGE_DIAGNOSTICS, branch=layout.BRANCH),
    log:
        f"{LOGS}/merges/{{method}}/{{params}}.log",
    benchmark:
        f"{BENCHMARKS}/merges/{{method}}/{{params}}.tsv"
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        method=lambda wc: branch(wc).method,
        hyperparameters=lambda wc: branch(wc).params,
        seed=config["seed"],
        device=config["merge"]["device"],
        svd_dtype=config["merge"]["svd_dtype"],
        exclude_from_svd=config["merge"]["exclude_from_svd"],
        diagnostics=config["merge"]["diagnostics"],
    script:
        "../scripts/merge.py"


rule export_merged:
    """A merge at its chosen lambda as a transformers model folder (merge.export_models: all)."""
    input:
        base=result(layout.BASE_MODEL),
        task_vector=result(layout.MERGED_TASK_VECTOR, branch=layout.BRANCH),
        selection=result(layout.SELECTION, branch=layout.BRANCH),
    output:
        directory(result(layout.MERGED_MODEL, branch=layout.BRANCH)),
    log:
        f"{LOGS}/merged_models/{{method}}/{{params}}.log",
    benchmark:
        f"{BENCHMARKS}/merged_models/{{method}}/{{params}}.tsv"
    conda:
        "../envs/asrmerge.yaml"
    params:
        candidates=lambda wc: export_candidates([branch(wc).id]),
        metric=config["selection"]["metric"],
    script:
        "../scripts/export_merged.py"


rule export_best_merge:
    """The merge branch with the lowest validation error at its chosen lambda, as a model folder (export_models: best)."""
    input:
        **export_inputs(BRANCHES),
    output:
        directory(result(layout.BEST_MERGED_MODEL)),
    log:
        f"{LOGS}/merged_models/best.log",
    benchmark:
        f"{BENCHMARKS}/merged_models/best.tsv"
    conda:
        "../envs/asrmerge.yaml"
    params:
        candidates=export_candidates(BRANCHES),
        metric=config["selection"]["metric"],
    script:
        "../scripts/export_merged.py"
