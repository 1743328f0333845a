rule task_vector:
    """tau_d = theta_d - theta_0, streamed tensor by tensor."""
    input:
        base=result(layout.BASE_MODEL),
        finetuned=result(layout.MODEL, model=layout.finetuned_system("{domain}")),
    output:
        result(layout.TASK_VECTOR),
    log:
        f"{LOGS}/task_vectors/{{domain}}.log",
    benchmark:
        f"{BENCHMARKS}/task_vectors/{{domain}}.tsv"
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/task_vector.py"
