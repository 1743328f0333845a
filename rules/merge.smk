rule merge:
    """One merged task vector per method and hyperparameter point; lambda is applied later."""
    input:
        base=f"{RESULTS}/models/base",
        task_vectors=expand(f"{RESULTS}/task_vectors/{{domain}}.safetensors", domain=DOMAINS),
    output:
        task_vector=f"{RESULTS}/merges/{{method}}/{{params}}/task_vector.safetensors",
        diagnostics=f"{RESULTS}/merges/{{method}}/{{params}}/diagnostics.json",
    params:
        method=lambda wc: branch(wc).method,
        hyperparameters=lambda wc: branch(wc).params,
        seed=config["seed"],
        device=config["merge"]["device"],
        svd_dtype=config["merge"]["svd_dtype"],
        exclude_from_svd=config["merge"]["exclude_from_svd"],
        diagnostics=config["merge"]["diagnostics"],
    log:
        f"{LOGS}/merges/{{method}}/{{params}}.log",
    benchmark:
        f"{BENCHMARKS}/merges/{{method}}/{{params}}.tsv",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/merge.py"
