# Configuration checks (before any job starts), derived lists, and input functions.
import re
import sys
from pathlib import Path

import asrmerge.layout as layout
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
BENCHMARKS = f"{RESULTS}/benchmarks"  # one Snakemake benchmark file (wall clock, memory) per job
DOMAINS = domains(config)
TEST_SETS = scored_sets(config)
GENERAL_SETS = sets_with_role(config, "general")
BRANCHES = {branch.id: branch for branch in merge_branches(config)}
MODEL_SYSTEMS = [layout.BASE, layout.JOINT] + [layout.finetuned_system(d) for d in DOMAINS]
MERGED_SYSTEMS = [layout.merged_system(branch_id) for branch_id in BRANCHES]
SYSTEMS = MODEL_SYSTEMS + MERGED_SYSTEMS
from asrmerge.report.plan import requested_figures  # noqa: E402

FIGURES = requested_figures(config, BRANCHES.values())  # the figures this config supports: asrmerge.report.plan


wildcard_constraints:
    set=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    domain=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[a-z0-9_]+",
    params=r"[^/]+",
    model=rf"{layout.BASE}|{layout.JOINT}|{layout.FINETUNED}/[A-Za-z0-9][A-Za-z0-9_-]*",
    system=rf"{layout.BASE}|{layout.JOINT}|{layout.FINETUNED}/[^/]+|{layout.MERGED}/[^/]+/[^/]+",
    figure="|".join(FIGURES),


def result(template, **fields):
    """A path under the results folder (asrmerge.layout); fields not given stay Snakemake wildcards."""
    return layout.path(RESULTS, template, **fields)


def manifest(set_name):
    return result(layout.MANIFEST, set=set_name)


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


# The fine-tunes the user supplies (finetune.checkpoints), by model folder ("joint", "finetuned/<domain>"): rule
# import_finetune adopts them, finetune_domain and finetune_joint train the others.
SUPPLIED = {
    (name if name == layout.JOINT else layout.finetuned_system(name)): path
    for name, path in config["finetune"]["checkpoints"].items()
}


def one_of(names):
    """A wildcard pattern matching exactly `names` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def supplied_inputs(wildcards):
    """The base, and the supplied fine-tune when it is a local folder (tracked; a hub id cannot be)."""
    given = SUPPLIED[wildcards.model]
    return {"base": result(layout.BASE_MODEL), "checkpoint": [given] if Path(given).is_dir() else []}


def training_inputs(train):
    return {"base": result(layout.BASE_MODEL), "train": train, "replay": manifests(GENERAL_SETS)}


def branch(wildcards):
    return BRANCHES[layout.BRANCH.format(method=wildcards.method, params=wildcards.params)]


def hypotheses(system):
    """Test set -> the system's hypothesis file."""
    return {t: result(layout.HYPOTHESES, system=system, test_set=t) for t in TEST_SETS}


def decode_plan(system):
    """Test set -> its manifest and the system's hypothesis file: what a decode job reads and writes."""
    return {t: {"manifest": manifest(t), "hypotheses": path} for t, path in hypotheses(system).items()}


def score_files():
    """System id -> its score file, for every system of the config."""
    return {s: result(layout.SCORES, system=s) for s in SYSTEMS}


def selection_files():
    """Merge branch id -> its selection record."""
    return {b: result(layout.SELECTION, branch=b) for b in BRANCHES}


EXPORT_MODELS = config["merge"]["export_models"]  # all | best | none


def export_candidates(branch_ids):
    """Branch id -> its method, parameters, merged task vector and selection record: what an export chooses from."""
    return {
        b: {
            "method": BRANCHES[b].method,
            "params": BRANCHES[b].params,
            "task_vector": result(layout.MERGED_TASK_VECTOR, branch=b),
            "selection": result(layout.SELECTION, branch=b),
        }
        for b in branch_ids
    }


def export_inputs(branch_ids):
    candidates = export_candidates(branch_ids)
    return {
        "base": result(layout.BASE_MODEL),
        "task_vectors": [c["task_vector"] for c in candidates.values()],
        "selections": [c["selection"] for c in candidates.values()],
    }


def merged_system_inputs(wildcards):
    """A merged system is decoded from its exported folder (merge.export_models: all), else as theta_0 + lambda tau."""
    branch_id = branch(wildcards).id
    if EXPORT_MODELS == "all":
        return {"model": result(layout.MERGED_MODEL, branch=branch_id)}
    return {
        "model": result(layout.BASE_MODEL),
        "task_vector": result(layout.MERGED_TASK_VECTOR, branch=branch_id),
        "selection": result(layout.SELECTION, branch=branch_id),
    }


def merged_model_outputs():
    if EXPORT_MODELS == "all":
        return [result(layout.MERGED_MODEL, branch=b) for b in BRANCHES]
    return [result(layout.BEST_MERGED_MODEL)] if EXPORT_MODELS == "best" and BRANCHES else []


def final_outputs():
    return [
        *expand(result(layout.TABLE), name=["wer.csv", "wer.md", "wer.tex", "wer_wide.csv", "wer.html"]),
        *expand(result(layout.TABLE), name=[f"paper.{ext}" for ext in ["csv", "md", "tex", "html"]]),
        *expand(result(layout.FIGURE), figure=FIGURES, ext=["png", "pdf"]),
        *merged_model_outputs(),
    ]
