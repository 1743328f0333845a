"""Rule import_finetune: a user's own fine-tune, checked against the base, its window adapted, saved as a model."""
from asrmerge.training.foundation import adopt_finetune
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake) as log:
    log.info("using the given fine-tune %s", snakemake.params.checkpoint)
    adopt_finetune(snakemake.params.checkpoint, snakemake.input.base).save(snakemake.output[0])
