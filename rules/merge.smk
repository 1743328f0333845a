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
