rule task_vector:
    """tau_d = theta_d - theta_0, streamed tensor by tensor."""
    input:
        base=result(layout.BASE_MODEL),
        finetuned=result(layout.MODEL, model=layout.finetuned_system("{domain}")),
    output:
        out=result(layout.TASK_VECTOR),
    log:
        layout.job_log(RESULTS, "task_vector"),
    benchmark:
        layout.job_benchmark(RESULTS, "task_vector")
    priority: 8
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/stage.py"


rule task_spectra:
    """The spectrum of every matrix of one task vector, computed once for the diagnostics of every merge."""
    input:
        task_vector=result(layout.TASK_VECTOR),
    output:
        out=result(layout.TASK_SPECTRA),
    log:
        layout.job_log(RESULTS, "task_spectra"),
    benchmark:
        layout.job_benchmark(RESULTS, "task_spectra")
    priority: 3
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    script:
        "../scripts/stage.py"
