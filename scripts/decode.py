"""Rules decode_model and decode_merged: transcribe the test split of every test set."""
import json

from asrmerge.decoding import DecodingOptions, transcribe
from asrmerge.hypotheses import write_jsonl
from asrmerge.data.manifest import read_manifest
from asrmerge.models.whisper import load_whisper, resolve_device
from asrmerge.selection import ScaledTaskVector
from asrmerge.workflow import job_logging

with job_logging(snakemake.log[0], snakemake.threads) as log:
    device = resolve_device(snakemake.params.device)
    whisper = load_whisper(snakemake.input.model, device=device)
    if "task_vector" in snakemake.input.keys():
        with open(snakemake.input.selection) as f:
            lam = json.load(f)["chosen_lambda"]
        log.info("merged model at lambda %g", lam)
        whisper = ScaledTaskVector(whisper, snakemake.input.task_vector).set_lambda(lam)
    options = DecodingOptions(**snakemake.params.evaluation)
    for manifest_path, out_path in zip(snakemake.input.test_sets, snakemake.output):
        rows = transcribe(whisper, read_manifest(manifest_path, split="test"), options, device)
        write_jsonl(rows, out_path)
        log.info("%s: %d utterances", out_path, len(rows))
