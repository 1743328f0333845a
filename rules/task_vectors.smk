rule task_vector:
    """tau_d = theta_d - theta_0, streamed tensor by tensor."""
    input:
        base=f"{RESULTS}/models/base",
        finetuned=f"{RESULTS}/models/finetuned/{{domain}}",
    output:
        f"{RESULTS}/task_vectors/{{domain}}.safetensors",
    log:
        f"{LOGS}/task_vectors/{{domain}}.log",
    benchmark:
        f"{BENCHMARKS}/task_vectors/{{domain}}.tsv",
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/task_vector.py"
