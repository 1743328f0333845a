"""Rule merge_diagnostics: a merged task vector's diagnostics, from files."""
from asrmerge.merging.diagnostics import diagnose_merge
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    inputs = snakemake.input
    diagnose_merge(inputs.task_vector, list(inputs.task_vectors), list(inputs.task_spectra), snakemake.output[0])
