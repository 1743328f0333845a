rule select_lambda:
    """Choose lambda on the domains' validation splits: one merge, one in-memory model per lambda."""
    input:
        base=f"{RESULTS}/models/base",
        task_vector=f"{RESULTS}/merges/{{method}}/{{params}}/task_vector.safetensors",
        validation=manifests(DOMAINS),
    output:
        f"{RESULTS}/selection/{{method}}/{{params}}.json",
    params:
        lambdas=lambda wc: list(branch(wc).lambdas),
        selection=config["selection"],
        evaluation=config["evaluation"],
        device=config["device"],
    log:
        f"{LOGS}/selection/{{method}}/{{params}}.log",
    benchmark:
        f"{BENCHMARKS}/selection/{{method}}/{{params}}.tsv",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/select_lambda.py"


rule decode_model:
    """Transcribe every test set with a trained model (base, joint or a domain fine-tune)."""
    input:
        model=f"{RESULTS}/models/{{model}}",
        test_sets=manifests(TEST_SETS),
    output:
        [f"{RESULTS}/hypotheses/{{model}}/{t}.jsonl" for t in TEST_SETS],
    params:
        evaluation=config["evaluation"],
        device=config["device"],
    log:
        f"{LOGS}/hypotheses/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/hypotheses/{{model}}.tsv",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/decode.py"


rule decode_merged:
    """Transcribe every test set with theta_0 + lambda * tau at the lambda chosen on validation."""
    input:
        model=f"{RESULTS}/models/base",
        task_vector=f"{RESULTS}/merges/{{method}}/{{params}}/task_vector.safetensors",
        selection=f"{RESULTS}/selection/{{method}}/{{params}}.json",
        test_sets=manifests(TEST_SETS),
    output:
        [f"{RESULTS}/hypotheses/merged/{{method}}/{{params}}/{t}.jsonl" for t in TEST_SETS],
    params:
        evaluation=config["evaluation"],
        device=config["device"],
    log:
        f"{LOGS}/hypotheses/merged/{{method}}/{{params}}.log",
    benchmark:
        f"{BENCHMARKS}/hypotheses/merged/{{method}}/{{params}}.tsv",
    threads: 2
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/decode.py"


rule score:
    """Error counts (substitutions, deletions, insertions, reference length) per test set and utterance."""
    input:
        lambda wc: hypotheses(wc.system),
    output:
        f"{RESULTS}/scores/{{system}}.json",
    params:
        test_sets=TEST_SETS,
    log:
        f"{LOGS}/scores/{{system}}.log",
    benchmark:
        f"{BENCHMARKS}/scores/{{system}}.tsv",
    conda:
        "../envs/asrmerge.yaml"
    script:
        "../scripts/score.py"
