"""Rules finetune_domain and finetune_joint: full fine-tuning, or import of a user's fine-tune."""
from asrmerge.foundation import adopt_finetune
from asrmerge.models.whisper import load_whisper, resolve_device
from asrmerge.training import TrainingOptions, train
from asrmerge.workflow import job_logging, utterances

with job_logging(snakemake.log[0], snakemake.threads) as log:
    if snakemake.params.checkpoint:
        log.info("using the given fine-tune %s", snakemake.params.checkpoint)
        adopt_finetune(snakemake.params.checkpoint, snakemake.input.base).save(snakemake.output[0])
    else:
        device = resolve_device(snakemake.params.device)
        train(
            load_whisper(snakemake.input.base, device=device),
            utterances(snakemake.input.train, split="train"),
            TrainingOptions(**snakemake.params.options, seed=snakemake.params.seed),
            snakemake.output[0],
            device,
            replay_set=utterances(snakemake.input.replay, split="train"),
        )
