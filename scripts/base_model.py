"""Rule base_model: pretrain the small foundation or copy a released Whisper."""
from asrmerge.foundation import prepare_base_model
from asrmerge.models.whisper import resolve_device
from asrmerge.workflow import job_logging, utterances

with job_logging(snakemake.log[0], snakemake.threads):
    prepare_base_model(
        snakemake.params.base,
        utterances(snakemake.input.general, split="train"),
        snakemake.output[0],
        resolve_device(snakemake.params.device),
        snakemake.params.seed,
    )
