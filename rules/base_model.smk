rule base_model:
    """The foundation: pretrain a small Whisper on the general sets, or load a released Whisper."""
    input:
        general=manifests(GENERAL_SETS) if config["base_model"]["source"] == "pretrain" else [],
        init=config["base_model"]["init"] or [],
    output:
        out=directory(result(layout.BASE_MODEL)),
    log:
        layout.job_log(RESULTS, "base_model"),
    benchmark:
        layout.job_benchmark(RESULTS, "base_model")
    priority: 10
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        settings=config["base_model"],
        device=config["device"],
        seed=config["seed"],
        generation=EXPERIMENT.generation,
    script:
        "../scripts/stage.py"
