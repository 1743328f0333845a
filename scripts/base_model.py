"""Rule base_model: pretrain the small foundation or copy a released Whisper."""
from asrmerge import stages
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    params = snakemake.params
    stages.base_model(params.base, snakemake.input.general, snakemake.output[0], params.seed, params.device,
                      params.generation)
