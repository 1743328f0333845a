"""Rule base_model: pretrain the small foundation or copy a released Whisper."""
from asrmerge.workflow import stages
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    params = snakemake.params
    stages.base_model(params.base, snakemake.input.general, snakemake.output[0], params.seed, params.device,
                      params.generation)
