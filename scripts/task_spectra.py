"""Rule task_spectra: the spectrum of every matrix of one task vector."""
from asrmerge.merging.diagnostics import write_task_spectra
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    write_task_spectra(snakemake.input[0], snakemake.output[0])
