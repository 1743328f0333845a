rule finetune_domain:
    """ID-FT: full fine-tuning on one domain (or import the user's own fine-tune of it)."""
    input:
        base=f"{RESULTS}/models/base",
        train=lambda wc: [manifest(wc.domain)],
        replay=manifests(GENERAL_SETS),
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
    """Full-FT: one fine-tune on the union of all domains' training splits."""
    input:
        base=f"{RESULTS}/models/base",
        train=manifests(DOMAINS),
        replay=manifests(GENERAL_SETS),
    output:
        directory(f"{RESULTS}/models/joint"),
    params:
        options=config["finetune"]["joint"],
        checkpoint=None,
        device=config["device"],
        seed=config["seed"],
    log:
        f"{LOGS}/models/joint.log",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/finetune.py"
