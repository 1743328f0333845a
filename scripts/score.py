"""Rule score: error counts of one system on every test set (asrmerge.workflow.stages.score)."""
from asrmerge.workflow.stages import score
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    score(snakemake.params.hypotheses, snakemake.output[0])
