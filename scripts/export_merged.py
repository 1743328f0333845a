"""Rules export_merged and export_best_merge: a merge at its chosen lambda as a transformers model folder, with its
model card and recipe (asrmerge.report.model_card.export_merge)."""
from asrmerge.report.model_card import export_merge
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    export_merge(snakemake.params.candidates, snakemake.input.base, list(snakemake.input.domain_task_vectors),
                 snakemake.params.settings, snakemake.params.metric, snakemake.params.card, snakemake.output[0])
