"""Rules decode_model and decode_merged: transcribe the test split of every test set."""
from asrmerge.decoding import DecodingOptions, transcribe
from asrmerge.hypotheses import write_jsonl
from asrmerge.layout import read_chosen_lambda
from asrmerge.data.manifest import read_manifest
from asrmerge.models.whisper import load_whisper, resolve_device
from asrmerge.selection import ScaledTaskVector
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    device = resolve_device(snakemake.params.device)
    whisper = load_whisper(snakemake.input.model, device=device)
    if "task_vector" in snakemake.input.keys():
        lam = read_chosen_lambda(snakemake.input.selection)
        log.info("merged model at lambda %g", lam)
        whisper = ScaledTaskVector(whisper, snakemake.input.task_vector).set_lambda(lam)
    options = DecodingOptions(**snakemake.params.evaluation)
    for test_set, files in snakemake.params.plan.items():
        rows = transcribe(whisper, read_manifest(files["manifest"], split="test"), options, device)
        write_jsonl(rows, files["hypotheses"])
        log.info("%s: %d utterances", test_set, len(rows))
