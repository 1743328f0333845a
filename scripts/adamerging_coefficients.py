"""Rule adamerging_coefficients: AdaMerging's coefficients (asrmerge.workflow.stages.adamerging_coefficients)."""
from asrmerge.workflow.stages import adamerging_coefficients
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    adamerging_coefficients(snakemake.input.base, snakemake.input.task_vectors, snakemake.input.validation,
                            snakemake.params.options, snakemake.output.coefficients, snakemake.output.summary,
                            snakemake.params.seed, snakemake.params.device, snakemake.params.max_new_tokens)
