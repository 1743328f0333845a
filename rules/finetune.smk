rule finetune_domain:
    """ID-FT: full fine-tuning on one domain (or import the user's own fine-tune of it)."""
    input:
        unpack(lambda wc: finetune_inputs(wc.domain, [manifest(wc.domain)])),
    output:
        directory(f"{RESULTS}/models/finetuned/{{domain}}"),
    params:
        options=config["finetune"]["domain"],
        checkpoint=lambda wc: config["finetune"]["checkpoints"].get(wc.domain),
        device=config["device"],
        seed=config["seed"],
    log:
        f"{LOGS}/models/finetuned/{{domain}}.log",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/finetune.py"


rule finetune_joint:
    """Full-FT: one fine-tune on the union of all domains' training splits (or import the user's own)."""
    input:
        unpack(lambda wc: finetune_inputs("joint", manifests(DOMAINS))),
    output:
        directory(f"{RESULTS}/models/joint"),
    params:
        options=config["finetune"]["joint"],
        checkpoint=config["finetune"]["checkpoints"].get("joint"),
        device=config["device"],
        seed=config["seed"],
    log:
        f"{LOGS}/models/joint.log",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/finetune.py"
