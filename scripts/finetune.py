"""Rules finetune_domain and finetune_joint: full fine-tuning."""
from asrmerge.models.whisper import load_whisper, resolve_device
from asrmerge.training import TrainingOptions, train
from asrmerge.workflow import job_logging, utterances

with job_logging(snakemake.log[0], snakemake.threads):
    device = resolve_device(snakemake.params.device)
    train(
        load_whisper(snakemake.input.base, device=device),
        utterances(snakemake.input.train, split="train"),
        TrainingOptions(**snakemake.params.options, seed=snakemake.params.seed),
        snakemake.output[0],
        device,
        replay_set=utterances(snakemake.input.replay, split="train"),
    )
