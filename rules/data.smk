rule corpus_set:
    """Synthesise a set from its generator spec, join another set's test utterances into long recordings, or import
    and validate a user manifest (an input: editing it rebuilds the set and what depends on it)."""
    input:
        unpack(corpus_inputs),
    output:
        manifest=result(layout.MANIFEST),
    log:
        layout.job_log(RESULTS, "corpus_set"),
    benchmark:
        layout.job_benchmark(RESULTS, "corpus_set")
    priority: 11
    conda:
        "../envs/asrmerge.yaml"
    params:
        spec=lambda wc: rows_spec(config["corpus"]["sets"][wc.set]),
        content=user_content,
        sample_rate=config["corpus"]["sample_rate"],
        seed=config["seed"],
    script:
        "../scripts/stage.py"


rule check_splits:
    """No recording (by content) in a training or validation split of one set and a test split of another: checked
    once every set is built, before any training or decoding reads them."""
    input:
        manifests=manifests(list(config["corpus"]["sets"])),
    output:
        out=result(layout.SPLITS_CHECK),
    log:
        layout.job_log(RESULTS, "check_splits"),
    benchmark:
        layout.job_benchmark(RESULTS, "check_splits")
    priority: 10
    conda:
        "../envs/asrmerge.yaml"
    params:
        sets=dict(zip(config["corpus"]["sets"], manifests(list(config["corpus"]["sets"])))),
        cache=f"{RESULTS}/{layout.DIGEST_CACHE}",
    script:
        "../scripts/stage.py"
