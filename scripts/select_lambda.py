"""Rule select_lambda: validation sweep over lambda for one merged task vector."""
from asrmerge.atomic import write_json
from asrmerge.decoding import DecodingOptions
from asrmerge.models.whisper import resolve_device
from asrmerge.selection import select_lambda
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    selection = snakemake.params.selection
    result = select_lambda(
        snakemake.input.base, snakemake.input.task_vector, snakemake.input.validation, snakemake.params.lambdas,
        DecodingOptions(**snakemake.params.evaluation), resolve_device(snakemake.params.device),
        metric=selection["metric"], tie_break=selection["tie_break"],
    )
    write_json(snakemake.output[0], {"method": snakemake.wildcards.method, "params": snakemake.wildcards.params, **result}, indent=2)
