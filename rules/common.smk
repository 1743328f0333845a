# Configuration checks (before any job starts), derived lists, and input functions.
import sys
from pathlib import Path

from asrmerge.workflow import share_package_with_jobs
from asrmerge.config import (
    ConfigError,
    check_config_file,
    domains,
    merge_branches,
    sets_with_role,
    scored_sets,
    validate_config,
)

try:
    for config_path in workflow.configfiles:
        check_config_file(config_path)
    validate_config(config, workdir=Path.cwd())  # jobs resolve relative paths from the working directory
except ConfigError as err:
    sys.exit(f"asrmerge: invalid configuration: {err}")


share_package_with_jobs()

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
DOMAINS = domains(config)
TEST_SETS = scored_sets(config)
GENERAL_SETS = sets_with_role(config, "general")
BRANCHES = {branch.id: branch for branch in merge_branches(config)}
MODEL_SYSTEMS = ["base", "joint"] + [f"finetuned/{d}" for d in DOMAINS]
MERGED_SYSTEMS = [f"merged/{branch_id}" for branch_id in BRANCHES]
SYSTEMS = MODEL_SYSTEMS + MERGED_SYSTEMS
from asrmerge.report.plan import requested_figures  # noqa: E402

FIGURES = requested_figures(config, BRANCHES.values())  # the figures this config supports: asrmerge.report.plan


wildcard_constraints:
    set=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    domain=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[a-z0-9_]+",
    params=r"[^/]+",
    model=r"base|joint|finetuned/[A-Za-z0-9][A-Za-z0-9_-]*",
    system=r"base|joint|finetuned/[^/]+|merged/[^/]+/[^/]+",
    figure="|".join(FIGURES),


def manifest(set_name):
    return f"{RESULTS}/data/{set_name}/manifest.jsonl"


def manifests(set_names):
    return [manifest(s) for s in set_names]


def corpus_inputs(wildcards):
    """What a set is made from: a user manifest file, or the set whose test utterances its recordings join."""
    spec = config["corpus"]["sets"][wildcards.set]
    if "manifest" in spec:
        return [spec["manifest"]]
    if "recordings_of" in spec:
        return [manifest(spec["recordings_of"])]
    return []


def finetune_inputs(model, train):
    """A fine-tune's inputs: the base and its data, or the base and the user's own fine-tune of `model` (a domain,
    or joint) when the config gives one (a local folder is tracked as an input; a hub id cannot be)."""
    given = config["finetune"]["checkpoints"].get(model)
    if given is None:
        return {"base": f"{RESULTS}/models/base", "train": train, "replay": manifests(GENERAL_SETS)}
    return {"base": f"{RESULTS}/models/base", "checkpoint": [given] if Path(given).is_dir() else []}


def branch(wildcards):
    return BRANCHES[f"{wildcards.method}/{wildcards.params}"]


def hypotheses(system):
    return [f"{RESULTS}/hypotheses/{system}/{t}.jsonl" for t in TEST_SETS]


def final_outputs():
    return [
        *expand(f"{RESULTS}/tables/{{name}}", name=["wer.csv", "wer.md", "wer.tex", "wer_wide.csv", "wer.html"]),
        *expand(f"{RESULTS}/tables/paper.{{ext}}", ext=["csv", "md", "tex", "html"]),
        *expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=FIGURES, ext=["png", "pdf"]),
    ]
