"""Rule select_lambda: validation sweep over lambda for one merged task vector (asrmerge.workflow.stages.select_lambda)."""
from asrmerge.workflow.stages import select_lambda
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    selection = snakemake.params.selection
    select_lambda(
        snakemake.input.base, snakemake.input.task_vector, snakemake.input.validation, snakemake.params.lambdas,
        snakemake.output[0], snakemake.params.evaluation, selection["metric"], selection["tie_break"],
        snakemake.params.device, record={"method": snakemake.wildcards.method, "params": snakemake.wildcards.params},
    )
