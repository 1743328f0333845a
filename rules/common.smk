# Configuration checks (before any job starts), derived lists, and input functions.
import re
import sys
from pathlib import Path

import asrmerge.layout as layout
from asrmerge.workflow.jobs import share_package_with_jobs
from asrmerge.workflow.config import ConfigError, check_config_file, check_devices, rows_spec, validate_config
from asrmerge.data.content import content_digest, manifest_digest
from asrmerge.data import hf_dataset
from asrmerge.workflow.experiment import Experiment
from asrmerge.workflow import lock as results_lock
from asrmerge.workflow import job_server, scheduler_wakeups
from snakemake.logging import logger
from asrmerge.merging.spec import PER_TASK_STATISTICS

try:
    for config_path in workflow.configfiles:
        check_config_file(config_path)
    validate_config(config, workdir=Path.cwd())  # jobs resolve relative paths from the working directory
    if workflow.local_exec:  # jobs run here: a device they name must exist here
        check_devices(config)
except ConfigError as err:
    sys.exit(f"asrmerge: invalid configuration: {err}")


share_package_with_jobs()
scheduler_wakeups.coalesce()  # Snakemake's scheduler otherwise wakes ever more often (see the module)

# Sets, systems, merge branches and their files: asrmerge.workflow.experiment (the `asrmerge` table, figure and
# report-check commands derive the same from the same config).
EXPERIMENT = Experiment(config)
RESULTS = EXPERIMENT.results
DOMAINS = EXPERIMENT.domains
TEST_SETS = EXPERIMENT.test_sets
GENERAL_SETS = EXPERIMENT.general_sets
BRANCHES = EXPERIMENT.branches
SYSTEMS = EXPERIMENT.systems
FIGURES = EXPERIMENT.figures  # the figures this config supports: asrmerge.workflow.figure_plan
result = EXPERIMENT.result
manifest = EXPERIMENT.manifest
manifests = EXPERIMENT.manifests
hypotheses = EXPERIMENT.hypotheses
test_set_manifests = EXPERIMENT.test_set_manifests
export_candidates = EXPERIMENT.export_candidates
score_files = EXPERIMENT.score_files
selection_files = EXPERIMENT.selection_files


wildcard_constraints:
    set=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    domain=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=r"[a-z0-9_]+",
    params=r"[^/]+",
    model=rf"{layout.BASE}|{layout.JOINT}|{layout.FINETUNED}/[A-Za-z0-9][A-Za-z0-9_-]*",
    system=rf"{layout.BASE}|{layout.JOINT}|{layout.FINETUNED}/[^/]+|{layout.MERGED}/[^/]+/[^/]+",
    figure="|".join(FIGURES),


def user_content(wildcards):
    """The content digest of what the user supplies for a set or a model (a manifest and its audio, a local
    dataset's files or a hub dataset's revision, a checkpoint folder's files): a param of the rule that imports it,
    so replacing a file in place reruns exactly what depends on it, and a copy with older times does not."""
    cache = f"{RESULTS}/{layout.DIGEST_CACHE}"
    name = getattr(wildcards, "set", None)
    if name is not None:
        spec = config["corpus"]["sets"][name]
        if "dataset" in spec:
            return hf_dataset.fingerprint(hf_dataset.DatasetSource.from_spec(spec["role"], spec["dataset"]), cache)
        return manifest_digest(spec["manifest"], cache) if "manifest" in spec else ""
    folder = Path(SUPPLIED[wildcards.model])
    return content_digest(sorted(p for p in folder.rglob("*") if p.is_file()), cache) if folder.is_dir() else ""


def corpus_inputs(wildcards):
    """What a set is made from: a user manifest file, or the set whose test utterances its recordings join."""
    spec = config["corpus"]["sets"][wildcards.set]
    if "manifest" in spec:
        return {"user_manifest": spec["manifest"]}
    if "recordings_of" in spec:
        return {"recordings_source": manifest(spec["recordings_of"])}
    return {}


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
    """The base, and the files of the supplied fine-tune when it is a local folder (each file an input, so that
    weights replaced in place rerun what depends on them; a hub id cannot be tracked)."""
    given = Path(SUPPLIED[wildcards.model])
    files = sorted(str(p) for p in given.iterdir() if p.is_file()) if given.is_dir() else []
    return {"base": result(layout.BASE_MODEL), "checkpoint_files": files}


def training_inputs(train):
    # ancient: the leakage check must have passed, and its rerun (a set changed) reruns nothing by itself
    return {
        "base": result(layout.BASE_MODEL),
        "train": train,
        "replay": manifests(GENERAL_SETS),
        "splits_checked": ancient(result(layout.SPLITS_CHECK)),
    }


def branch(wildcards):
    return BRANCHES[layout.BRANCH.format(method=wildcards.method, params=wildcards.params)]


EXPORT_MODELS = config["merge"]["export_models"]  # all | best | none


def export_inputs(branch_ids):
    """What an export reads: the base, every domain's task vector (for its recipe) and each candidate's files."""
    candidates = export_candidates(branch_ids).values()
    return {
        "base": result(layout.BASE_MODEL),
        "domain_task_vectors": EXPERIMENT.task_vectors(),
        "task_vectors": [c["task_vector"] for c in candidates],
        "selections": [c["selection"] for c in candidates],
        "scores": [c["scores"] for c in candidates],
        "statistics": [path for c in candidates for path in c["statistics"]],
    }


#: The merge job's settings (rule merge), which the recipe of an exported merge records.
MERGE_SETTINGS = EXPERIMENT.merge_settings()


def merged_system_inputs(wildcards):
    """A merged system is decoded as theta_0 + lambda tau (the weights its exported folder holds, which is written
    after its scores, for its model card)."""
    branch_id = branch(wildcards).id
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
        *EXPERIMENT.table_files().values(),
        *(path for figure in FIGURES for path in EXPERIMENT.figure_files(figure).values()),
        *merged_model_outputs(),
    ]


RUN = {}  # what start_run starts and end_run ends


def start_run():
    """Before any job starts: the run's lock on its results folder (asrmerge.workflow.lock), and the warm
    interpreter its local jobs fork from (asrmerge.workflow.job_server)."""
    try:
        results_lock.acquire(RESULTS)
    except results_lock.ResultsInUse as err:
        sys.exit(f"asrmerge: {err}")
    if workflow.local_exec:
        RUN["job_server"] = job_server.start()


def end_run():
    """After the last job, done or failed: the job server ended (what it reported goes to the run's log), the
    results folder's lock released."""
    notes = job_server.stop(RUN.pop("job_server", None))
    if notes:
        logger.warning(notes)
    results_lock.release(RESULTS)
