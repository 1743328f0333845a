"""Rule check_splits: no recording in a training or validation split and a test split of any sets
(asrmerge.data.content.check_splits)."""
from asrmerge.data.content import check_splits
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    check_splits(dict(zip(snakemake.params.sets, snakemake.input.manifests)), snakemake.output[0],
                 snakemake.params.cache)
