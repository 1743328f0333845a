"""Rule select_lambda: validation sweep over lambda for one merged task vector."""
import json

from asrmerge.decoding import DecodingOptions
from asrmerge.models.whisper import load_whisper, resolve_device
from asrmerge.selection import ScaledTaskVector, choose_lambda, sweep_lambda
from asrmerge.workflow import job_logging, utterances

with job_logging(snakemake.log[0], snakemake.threads):
    device = resolve_device(snakemake.params.device)
    scaled = ScaledTaskVector(load_whisper(snakemake.input.base, device=device), snakemake.input.task_vector)
    validation = utterances(snakemake.input.validation, split="validation")
    selection = snakemake.params.selection
    curve = sweep_lambda(scaled, validation, snakemake.params.lambdas, DecodingOptions(**snakemake.params.evaluation), device)
    chosen = choose_lambda(curve, selection["metric"], selection["tie_break"])
    with open(snakemake.output[0], "w") as f:
        json.dump({
            "method": snakemake.wildcards.method,
            "params": snakemake.wildcards.params,
            "chosen_lambda": chosen,
            "rule": f"lowest pooled validation {selection['metric'].upper()} over the domains' validation splits; "
                    f"ties to the {selection['tie_break']} lambda",
            "validation_utterances": len(validation),
            "curve": curve,
        }, f, indent=2)
