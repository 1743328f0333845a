rule select_lambda:
    """Choose lambda on the domains' validation splits: one merge, one in-memory model per lambda."""
    input:
        base=result(layout.BASE_MODEL),
        task_vector=result(layout.MERGED_TASK_VECTOR, branch=layout.BRANCH),
        validation=manifests(DOMAINS),
    output:
        out=result(layout.SELECTION, branch=layout.BRANCH),
    log:
        layout.job_log(RESULTS, "select_lambda"),
    benchmark:
        layout.job_benchmark(RESULTS, "select_lambda")
    priority: 5
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        lambdas=lambda wc: list(branch(wc).lambdas),
        metric=config["selection"]["metric"],
        tie_break=config["selection"]["tie_break"],
        evaluation=config["evaluation"],
        device=config["device"],
        record=lambda wc: {"method": wc.method, "params": wc.params},
    script:
        "../scripts/stage.py"


rule decode_model:
    """Transcribe every test set with a trained model (base, joint or a domain fine-tune)."""
    input:
        model=result(layout.MODEL),
        test_manifests=manifests(TEST_SETS),
        splits_checked=ancient(result(layout.SPLITS_CHECK)),
    output:
        list(hypotheses("{model}").values()),
    log:
        layout.job_log(RESULTS, "decode_model"),
    benchmark:
        layout.job_benchmark(RESULTS, "decode_model")
    priority: 4
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        test_sets=test_set_manifests(),
        out_dir=lambda wc: result(layout.HYPOTHESES_DIR, system=wc.model),
        evaluation=config["evaluation"],
        device=config["device"],
    script:
        "../scripts/stage.py"


rule decode_merged:
    """Transcribe every test set with theta_0 + lambda * tau at the lambda chosen on validation, applied to the base
    in memory (the weights its exported folder holds)."""
    input:
        unpack(merged_system_inputs),
        test_manifests=manifests(TEST_SETS),
    output:
        list(hypotheses(layout.merged_system(layout.BRANCH)).values()),
    log:
        layout.job_log(RESULTS, "decode_merged"),
    benchmark:
        layout.job_benchmark(RESULTS, "decode_merged")
    priority: 4
    conda:
        "../envs/asrmerge.yaml"
    threads: 2
    params:
        test_sets=test_set_manifests(),
        out_dir=lambda wc: result(layout.HYPOTHESES_DIR, system=layout.merged_system(branch(wc).id)),
        evaluation=config["evaluation"],
        device=config["device"],
    script:
        "../scripts/stage.py"


rule score:
    """Error counts (substitutions, deletions, insertions, reference length) per test set and utterance."""
    input:
        lambda wc: list(hypotheses(wc.system).values()),
    output:
        out=result(layout.SCORES),
    log:
        layout.job_log(RESULTS, "score"),
    benchmark:
        layout.job_benchmark(RESULTS, "score")
    priority: 3
    conda:
        "../envs/asrmerge.yaml"
    params:
        hypotheses=lambda wc: hypotheses(wc.system),
    script:
        "../scripts/stage.py"
