"""The results folder: its path templates, the system ids and the selection record, in one place.

Every cached file of a run lives under its results folder (`config.results`) at one of the templates below, written
in Snakemake's wildcard syntax. The rules (rules/*.smk) build their inputs and outputs from them, the figure planner
(asrmerge.workflow.figure_plan) the inputs of each figure, and the scripts and report code read the files they name.

A system id names one transcribing system and is also the folder of its hypotheses and the name of its score file:
    base                      the zero-shot base model
    joint                     the joint fine-tune on every domain (Full-FT)
    finetuned/<domain>        one domain's fine-tune (ID-FT)
    merged/<method>/<params>  one merge branch (method, hyperparameter label) at its chosen λ
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

BASE = "base"
JOINT = "joint"
FINETUNED = "finetuned"
MERGED = "merged"

#: A merge branch id ("ties/density=0.2", "task_arithmetic/default"): the rules' wildcards for it.
BRANCH = "{method}/{params}"
#: Between the key=value pairs of a branch's {params} label ("beta=0.3+orthogonaliser=svd"). Not a comma: cluster jobs
#: receive their wildcards as Snakemake's --target-jobs "rule:name=value,name=value", split at every comma.
PARAM_SEPARATOR = "+"

LOGS = "logs"  # one log per job, under the folder of its outputs' kind
BENCHMARKS = "benchmarks"  # one Snakemake benchmark file (wall clock, memory) per job
#: Written into a results folder by the run that holds it (its lock, asrmerge.workflow.lock): a folder with it is a
#: results folder of this project, and a second run on it is refused while the first holds it.
RESULTS_MARKER = ".asrmerge-results"
RESULTS_LOCK = ".asrmerge-lock"  # the running workflow's lock on the folder (asrmerge.workflow.lock)
#: Content digests of the user's files (manifests, audio, supplied checkpoints), by path, size and time.
DIGEST_CACHE = ".asrmerge-digests.json"

MANIFEST_NAME = "manifest.jsonl"  # every split of a set, one utterance per line (audio beside it under audio/)
MANIFEST = "data/{set}/" + MANIFEST_NAME
SPLITS_CHECK = "data/splits_checked.json"  # no recording both in a tuning split and a test split, across all sets
BASE_MODEL = "models/base"  # the base model (θ₀) as a transformers folder
MODEL = "models/{model}"  # model: a trained system id (base, joint, finetuned/<domain>)
TASK_VECTOR = "task_vectors/{domain}.safetensors"  # τ = θ_domain − θ₀
TASK_SPECTRA = "task_vectors/{domain}.spectra.json"  # every matrix's spectrum, for the merge diagnostics
STATISTICS = "statistics/{domain}/{kind}.safetensors"  # kind: gram | fisher (data-aware merges)
MERGED_TASK_VECTOR = "merges/{branch}/task_vector.safetensors"  # the merged τ, independent of λ
MERGE_DIAGNOSTICS = "merges/{branch}/diagnostics.json"  # spectra, effective ranks, sign conflicts (the figures' merges)
MERGE_COEFFICIENTS = "merges/{branch}/coefficients.safetensors"  # AdaMerging's learned coefficients, for the merge
MERGE_COEFFICIENTS_SUMMARY = "merges/{branch}/coefficients.json"  # the same, readable, with the entropy curve
SELECTION = "selection/{branch}.json"  # the validation curve over λ, the chosen λ and the rule
MERGED_MODEL = "merged_models/{branch}"  # θ₀ + λ·τ at the chosen λ, a transformers folder
BEST_MERGED_MODEL = "merged_models/best"  # the merge branch best on validation (merge.export_models: best)
HYPOTHESES_DIR = "hypotheses/{system}"  # one file per test set (HYPOTHESIS_FILE): what a decode job writes
HYPOTHESIS_FILE = "{test_set}.jsonl"  # id, language, reference, hypothesis, flags per utterance
HYPOTHESES = f"{HYPOTHESES_DIR}/{HYPOTHESIS_FILE}"
SCORES = "scores/{system}.json"  # error counts per test set and per utterance
#: The table rule's outputs: output name -> file name under tables/ (TABLE's {name}).
TABLE_FILES: dict[str, str] = {
    "csv": "wer.csv", "markdown": "wer.md", "latex": "wer.tex", "wide_csv": "wer_wide.csv", "html": "wer.html",
    "paper_csv": "paper.csv", "paper_markdown": "paper.md", "paper_latex": "paper.tex", "paper_html": "paper.html",
}
#: The formats every figure is drawn in (FIGURE's {ext}).
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
TABLE = "tables/{name}"  # paper.{md,tex,csv,html}, wer.{csv,md,tex,html}, wer_wide.csv
FIGURE = "figures/{figure}.{ext}"  # PNG and PDF of each figure the config supports (asrmerge.workflow.figure_plan)

# The files of a model folder (base, fine-tunes, merged models): a transformers folder, and what this project adds.
MODEL_WEIGHTS = "model.safetensors"
MODEL_WEIGHTS_INDEX = "model.safetensors.index.json"  # the weights in shards (released checkpoints)
MODEL_CONFIG = "config.json"
CTC_HEAD = "ctc_head.safetensors"  # a pretrained model's CTC head, kept so that a later stage continues it
LORA_ADAPTERS = "lora_adapters.safetensors"  # a LoRA fine-tune's adapters, beside the weights that already hold them
LOSS_CURVE = "loss.csv"  # a trained model's loss per step
MERGE_INFO = "merge_info.json"  # a merged model's inputs, their digests and λ
MERGE_RECIPE = "merge_recipe.json"  # an exported merge's recipe: `asrmerge merge --recipe` rebuilds it
MODEL_CARD = "README.md"  # an exported merge's model card, as the Hugging Face Hub reads one

# The "kind" metadata of the safetensors files the workflow writes; a reader refuses a file of another kind.
TASK_VECTOR_KIND = "task_vector"
MERGED_TASK_VECTOR_KIND = "merged_task_vector"
MERGED_MODEL_KIND = "merged_model"
STATISTICS_KIND = "statistics"  # its "statistics" metadata names which (asrmerge.merging.spec.STATISTICS_KINDS)

#: The selection record's key for the λ chosen on validation (asrmerge.evaluation.selection writes it, decoding applies it).
CHOSEN_LAMBDA = "chosen_lambda"


#: Each rule's job record, by rule: its log is logs/<record>.log, its Snakemake benchmark benchmarks/<record>.tsv,
#: where <record> is the path (in the rules' wildcards) of what the job makes, so the records mirror the results.
JOB_RECORDS: dict[str, str] = {
    "corpus_set": "data/{set}",
    "check_splits": "data/splits_checked",
    "base_model": "models/base",
    "finetune_domain": "models/finetuned/{domain}",
    "finetune_joint": "models/joint",
    "import_finetune": "models/{model}",
    "task_vector": "task_vectors/{domain}",
    "task_spectra": "task_vectors/{domain}.spectra",
    "statistics": "statistics/{domain}/{kind}",
    "adamerging_coefficients": f"merges/{BRANCH}.coefficients",
    "merge": f"merges/{BRANCH}",
    "merge_diagnostics": f"merges/{BRANCH}.diagnostics",
    "export_merged": f"merged_models/{BRANCH}",
    "export_best_merge": "merged_models/best",
    "select_lambda": f"selection/{BRANCH}",
    "decode_model": "hypotheses/{model}",
    "decode_merged": f"hypotheses/{MERGED}/{BRANCH}",
    "score": "scores/{system}",
    "table": "tables/wer",
    "figure": "figures/{figure}",
}


def job_log(results: str | os.PathLike[str], rule: str) -> str:
    """The log file of a job of `rule` (JOB_RECORDS), with the rule's wildcards left for Snakemake."""
    return f"{os.fspath(results)}/{LOGS}/{JOB_RECORDS[rule]}.log"


def job_benchmark(results: str | os.PathLike[str], rule: str) -> str:
    """The Snakemake benchmark file (wall clock, CPU time, peak memory) of a job of `rule` (JOB_RECORDS)."""
    return f"{os.fspath(results)}/{BENCHMARKS}/{JOB_RECORDS[rule]}.tsv"


def log_of_benchmark(results: str | os.PathLike[str], benchmark: str | os.PathLike[str]) -> str:
    """The log of the job whose benchmark file is `benchmark` (both are named by the job's record)."""
    record = os.path.relpath(benchmark, os.path.join(results, BENCHMARKS))
    return os.path.join(os.fspath(results), LOGS, os.path.splitext(record)[0] + ".log")


class _Wildcards(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def top_level_names() -> frozenset[str]:
    """The names a results folder holds at its top level (the first part of every template here)."""
    templates = [value for name, value in globals().items() if name.isupper() and isinstance(value, str) and "/" in value
                 and not value.startswith("{")]
    return frozenset({t.split("/")[0] for t in templates} | {LOGS, BENCHMARKS, RESULTS_MARKER, RESULTS_LOCK, DIGEST_CACHE})


def folder(results: str | os.PathLike[str], template: str) -> str:
    """The top-level folder under `results` that holds a template's files ("R/selection" for SELECTION)."""
    return f"{os.fspath(results)}/{template.split('/', 1)[0]}"


def path(results: str | os.PathLike[str], template: str, **fields: str) -> str:
    """`results/template` with the given fields filled in; the others stay `{wildcards}` for Snakemake."""
    return f"{os.fspath(results)}/{template.format_map(_Wildcards(fields))}"


def finetuned_system(domain: str) -> str:
    return f"{FINETUNED}/{domain}"


def merged_system(branch_id: str) -> str:
    return f"{MERGED}/{branch_id}"


def split_system(system: str) -> tuple[str, str, str]:
    """(kind, method or domain, params label): ("merged", "ties", "density=0.2"), ("finetuned", "news", ""),
    ("base", "", "")."""
    kind, _, rest = system.partition("/")
    if kind == MERGED:
        method, _, params = rest.partition("/")
        return kind, method, params
    if kind == FINETUNED:
        return kind, rest, ""
    return system, "", ""


def is_finetuned(system: str) -> bool:
    return split_system(system)[0] == FINETUNED


def chosen_lambda(selection: Mapping) -> float:
    """The λ of a selection record (asrmerge.evaluation.selection.select_lambda)."""
    return float(selection[CHOSEN_LAMBDA])


def read_chosen_lambda(selection_path: str | os.PathLike[str]) -> float:
    with open(selection_path, encoding="utf-8") as f:
        return chosen_lambda(json.load(f))
