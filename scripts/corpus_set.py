"""Rule corpus_set: synthesise one set, import a user manifest, or read a Hugging Face dataset into one; then say what
happens to recordings longer than the model's window (asrmerge.evaluation.longform.length_report)."""
from pathlib import Path

from asrmerge.data.corpus import build_set
from asrmerge.data.manifest import read_manifest
from asrmerge.data.recordings import build_recordings, is_recordings_spec, parse_recordings_spec
from asrmerge.data.user_manifest import import_user_set, user_set_sources
from asrmerge.evaluation.longform import length_report
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake) as log:
    spec = snakemake.params.spec
    out_dir = Path(snakemake.output.manifest).parent
    if user_set_sources(spec):
        import_user_set(snakemake.wildcards.set, spec, snakemake.output.manifest, snakemake.params.sample_rate)
    elif is_recordings_spec(spec):
        build_recordings(snakemake.wildcards.set, parse_recordings_spec(snakemake.wildcards.set, spec, snakemake.config["corpus"]["sets"]),
                         snakemake.input[0], out_dir, seed=snakemake.params.seed, sample_rate=snakemake.params.sample_rate)
    else:
        build_set(snakemake.wildcards.set, spec, out_dir, seed=snakemake.params.seed, sample_rate=snakemake.params.sample_rate)
    # Read from the config, not rule params: changing the decoding mode must not rebuild the corpus.
    for line in length_report(read_manifest(snakemake.output.manifest), snakemake.config["base_model"]["audio_seconds"],
                              snakemake.config["evaluation"]["long_form"]):
        log.info(line)
