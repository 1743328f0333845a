# asrmerge: can one merged Whisper replace per-domain fine-tuned Whispers?
#
# Stages (one file each under rules/): corpus -> base model -> fine-tunes -> task vectors -> merges
# -> lambda selection on validation -> decoding -> scoring -> tables and figures.
#
# Results layout (all under config["results"], default results/demo/):
#   data/{set}/manifest.jsonl                    utterances of every split of a set (audio under data/{set}/audio/)
#   models/base/                                 the foundation model (transformers folder, safetensors)
#   models/joint/                                joint fine-tune on all domains (Full-FT)
#   models/finetuned/{domain}/                   per-domain fine-tunes (ID-FT), with loss.csv
#   task_vectors/{domain}.safetensors            tau_d = theta_d - theta_0
#   statistics/{domain}/{gram,fisher}.safetensors  a fine-tune's statistics on its domain (data-aware merges only)
#   merges/{method}/{params}/task_vector.safetensors   merged task vector (independent of lambda)
#   merges/{method}/{params}/diagnostics.json    spectra, effective ranks, sign conflicts (the figures' merges)
#   selection/{method}/{params}.json             validation curve over lambda and the chosen lambda
#   hypotheses/{system}/{test_set}.jsonl         per-utterance id, reference, hypothesis
#   scores/{system}.json                         error counts per test set and per utterance
#   tables/paper.{md,tex,csv,html}               the paper's layout (groups as columns, significance vs Full-FT)
#   tables/wer.{csv,md,tex,html}, wer_wide.csv   every system on every test set, all error counts
#   figures/{figure}.png|pdf                     asrmerge/workflow/figure_plan.py lists the figures a config supports
# {system} is base, joint, finetuned/{domain} or merged/{method}/{params};
# {params} is "default" or the hyperparameters the config sets, e.g. "density=0.2+scope=tensor".
#   logs/...                                     one log file per job, mirroring the paths above
#   benchmarks/...                               one .tsv per job (wall clock, CPU time, peak memory), same paths

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
    take_results_folder()


onsuccess:
    results_lock.release(RESULTS)


onerror:
    results_lock.release(RESULTS)


rule all:
    default_target: True
    input:
        final_outputs(),
