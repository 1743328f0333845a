"""Rule statistics: one domain's Gram or Fisher statistics (asrmerge.workflow.stages.statistics)."""
from asrmerge.workflow.stages import statistics
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    statistics(snakemake.wildcards.kind, snakemake.input.model, snakemake.input.train, snakemake.output[0],
               snakemake.params.options, snakemake.params.seed, snakemake.params.device)
