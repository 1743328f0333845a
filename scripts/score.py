"""Rule score: error counts of one system on every test set (asrmerge.stages.score)."""
from asrmerge.stages import score
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0]):
    score(snakemake.params.hypotheses, snakemake.output[0])
