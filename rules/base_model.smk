rule base_model:
    """The foundation: pretrain a small Whisper on the general sets, or load a released Whisper."""
    input:
        general=manifests(GENERAL_SETS) if config["base_model"]["source"] == "pretrain" else [],
        init=config["base_model"]["init"] or [],
    output:
        directory(result(layout.BASE_MODEL)),
    params:
        base=config["base_model"],
        device=config["device"],
        seed=config["seed"],
    log:
        f"{LOGS}/models/base.log",
    benchmark:
        f"{BENCHMARKS}/models/base.tsv",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/base_model.py"
