"""Rule task_vector: tau = theta_finetuned - theta_base."""
from asrmerge.merging.engine import compute_task_vector
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    compute_task_vector(snakemake.input.base, snakemake.input.finetuned, snakemake.output[0])
