"""Rules export_merged and export_best_merge: a merge at its chosen lambda as a transformers model folder."""
import json
from pathlib import Path

from asrmerge.layout import chosen_lambda
from asrmerge.merging.engine import export_merged_model
from asrmerge.evaluation.selection import best_branch
from asrmerge.workflow.jobs import job_logging

with job_logging(snakemake.log[0], job=snakemake):
    candidates = snakemake.params.candidates  # branch id -> its merged task vector and selection record
    records = {branch: json.loads(Path(files["selection"]).read_text()) for branch, files in candidates.items()}
    chosen = best_branch(records, snakemake.params.metric)
    files = candidates[chosen]
    export_merged_model(
        snakemake.input.base, files["task_vector"], chosen_lambda(records[chosen]), snakemake.output[0],
        provenance={"branch": chosen, "method": files["method"], "params": files["params"], "selection": files["selection"]},
    )
