"""Rule table: the per-test-set table and the paper-layout table, from the error counts."""
from asrmerge.layout import TABLE_FILES
from asrmerge.report.tables import write_run_tables
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    params = snakemake.params
    outputs = {key: getattr(snakemake.output, key) for key in TABLE_FILES}
    write_run_tables(params.scores, params.selections, params.manifests, params.roles, params.reference, outputs,
                     params.metrics)
