rule finetune_domain:
    """ID-FT: full fine-tuning on one domain."""
    input:
        unpack(lambda wc: training_inputs([manifest(wc.domain)])),
    output:
        out=directory(result(layout.MODEL, model=layout.finetuned_system("{domain}"))),
    log:
        layout.job_log(RESULTS, "finetune_domain"),
    benchmark:
        layout.job_benchmark(RESULTS, "finetune_domain")
    wildcard_constraints:
        domain=rf"(?!(?:{one_of(d for d in DOMAINS if layout.finetuned_system(d) in SUPPLIED)})$)[A-Za-z0-9][A-Za-z0-9_-]*",
    priority: 9
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        options=config["finetune"]["domain"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/stage.py"


rule finetune_joint:
    """Full-FT: one fine-tune on the union of all domains' training splits."""
    input:
        unpack(lambda wc: training_inputs(manifests(DOMAINS))),
    output:
        out=directory(result(layout.MODEL, model=layout.JOINT)),
    log:
        layout.job_log(RESULTS, "finetune_joint"),
    benchmark:
        layout.job_benchmark(RESULTS, "finetune_joint")
    priority: 5
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        options=config["finetune"]["joint"],
        device=config["device"],
        seed=config["seed"],
    script:
        "../scripts/stage.py"


ruleorder: import_finetune > finetune_joint


rule import_finetune:
    """A fine-tune the user supplies (finetune.checkpoints), checked against the base and adapted to its window."""
    input:
        unpack(supplied_inputs),
    output:
        out=directory(result(layout.MODEL)),
    log:
        layout.job_log(RESULTS, "import_finetune"),
    benchmark:
        layout.job_benchmark(RESULTS, "import_finetune")
    wildcard_constraints:
        model=one_of(SUPPLIED),
    priority: 9
    conda:
        "../envs/asrmerge.yaml"
    params:
        checkpoint=lambda wc: SUPPLIED[wc.model],
        content=user_content,
    script:
        "../scripts/stage.py"
