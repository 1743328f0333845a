"""Rule merge: one merged task vector, with its diagnostics."""
import torch

from asrmerge.atomic import write_json
from asrmerge.merging.engine import merge
from asrmerge.models.whisper import resolve_device
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    diagnostics = snakemake.output.diagnostics if snakemake.params.diagnostics else None
    merge(
        snakemake.input.base,
        task_vectors=list(snakemake.input.task_vectors),
        method=snakemake.params.method,
        params=snakemake.params.hyperparameters,
        out_path=snakemake.output.task_vector,
        seed=snakemake.params.seed,
        device=str(resolve_device(snakemake.params.device)),
        svd_dtype=getattr(torch, snakemake.params.svd_dtype),
        exclude_from_svd=snakemake.params.exclude_from_svd,
        diagnostics_path=diagnostics,
    )
    if diagnostics is None:
        write_json(snakemake.output.diagnostics, {"disabled": True}, indent=None)
