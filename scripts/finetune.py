"""Rules finetune_domain and finetune_joint: full fine-tuning (asrmerge.workflow.stages.finetune)."""
from asrmerge.workflow.stages import finetune
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    finetune(snakemake.input.base, snakemake.input.train, snakemake.output[0], snakemake.params.options,
             snakemake.params.seed, snakemake.params.device, replay_manifests=snakemake.input.replay)
