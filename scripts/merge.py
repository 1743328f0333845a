"""Rule merge: one merged task vector (asrmerge.merging.recipe.merge_with_settings, as a recipe rebuilds it)."""
from asrmerge.merging.recipe import merge_with_settings
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    merge_with_settings(snakemake.input.base, snakemake.input.task_vectors, snakemake.params.method,
                        snakemake.params.hyperparameters, snakemake.input.statistics, snakemake.params.settings,
                        snakemake.output[0])
