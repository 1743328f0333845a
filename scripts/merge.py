"""Rule merge: one merged task vector."""
import torch

from asrmerge.merging.engine import merge
from asrmerge.models.whisper import resolve_device
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads, job=snakemake):
    merge(
        snakemake.input.base,
        task_vectors=list(snakemake.input.task_vectors),
        method=snakemake.params.method,
        params=snakemake.params.hyperparameters,
        out_path=snakemake.output[0],
        seed=snakemake.params.seed,
        device=str(resolve_device(snakemake.params.device)),
        svd_dtype=getattr(torch, snakemake.params.svd_dtype),
        exclude_from_svd=snakemake.params.exclude_from_svd,
        statistics=list(snakemake.input.statistics),
    )
