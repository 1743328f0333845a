# asrmerge: can one merged Whisper replace per-domain fine-tuned Whispers?
#
# Stages (one file each under rules/): corpus -> base model -> fine-tunes -> task vectors -> statistics -> merges
# -> lambda selection on validation -> decoding -> scoring -> tables and figures.
#
# Each rule's `priority:` is the number of rules on the longest chain from it to the final target: of the jobs ready
# at once, those that most stages still wait on start first, so a run does not end with one merge's selection,
# decode and table on one core while the others idle (tests/test_rules.py derives the numbers from the rule graph).
#
# Results layout: every output lies under config["results"] (default results/demo/) at a path template of
# asrmerge/layout.py; docs/reference/layout.md lists them with the rules that write them (`asrmerge docs`).

from snakemake.utils import min_version

min_version("9.0")


# config.yaml (the offline demo) is the default experiment; a --configfile given on the command line replaces it
# whole instead of being merged into it, in this process and in every cluster job.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/base_model.smk"
include: "rules/finetune.smk"
include: "rules/task_vectors.smk"
include: "rules/statistics.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


onstart:
    start_run()


onsuccess:
    end_run()


onerror:
    end_run()


rule all:
    default_target: True
    input:
        final_outputs(),
