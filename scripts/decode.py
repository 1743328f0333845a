"""Rules decode_model and decode_merged: transcribe the test split of every test set (asrmerge.workflow.stages.decode)."""
from asrmerge.workflow.stages import decode
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    decode(snakemake.input.model, snakemake.params.plan, snakemake.params.evaluation, snakemake.params.device,
           task_vector=snakemake.input.get("task_vector"), selection=snakemake.input.get("selection"))
