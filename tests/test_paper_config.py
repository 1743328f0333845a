"""experiments/paper.yaml: the paper's experiment, its sets named by their Hugging Face datasets, builds its whole
DAG (dry run), fast and offline."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asrmerge.workflow.config import domains, merge_branches, scored_sets, validate_config
from asrmerge.workflow.figure_plan import requested_figures

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "paper.yaml"
PAPER_METHODS = {"model_soup", "model_stock", "karcher", "multislerp", "task_arithmetic", "ties", "pcb", "sce",
                 "iso_c", "iso_cts", "tsv_m", "boosted_tsv_m"}
BEYOND_THE_PAPER = {"regmean", "fisher", "adamerging"}  # data-aware merges, listed after the paper's


#: A commit for the stand-in local Hub cache: the paper's datasets as `huggingface-cli download` leaves them.
CACHED_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def paper_config(tmp_path_factory):
    """paper.yaml with its results in a temporary folder, and a local Hugging Face cache (HF_HOME) that holds a
    commit of each dataset it names, so that the offline dry run finds them (their files are read by the corpus jobs,
    which a dry run does not run)."""
    tmp = tmp_path_factory.mktemp("paper")
    config = yaml.safe_load(PAPER.read_text())
    for repo in {spec["dataset"]["path"] for spec in config["corpus"]["sets"].values()}:
        folder = tmp / "hf" / "hub" / f"datasets--{repo.replace('/', '--')}"
        (folder / "snapshots" / CACHED_COMMIT).mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(CACHED_COMMIT)
    config["results"] = str(tmp / "results")
    path = tmp / "paper.yaml"  # the same experiment; only where its results live differs
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config, tmp / "hf"


def test_paper_config_has_the_papers_setup(paper_config):
    _, config, _ = paper_config
    config = validate_config(yaml.safe_load(yaml.safe_dump(config)), workdir=ROOT)
    roles = [spec["role"] for spec in config["corpus"]["sets"].values()]
    assert roles.count("domain") == 10 and roles.count("ood") == 5
    assert {"english", "brazilian", "multilingual", "accented"} <= set(roles)
    sets = config["corpus"]["sets"]
    assert all("dataset" in spec for spec in sets.values())  # every set by its dataset's name
    fleurs = {name: spec for name, spec in sets.items() if spec["dataset"]["path"] == "google/fleurs"}
    assert sum(spec["role"] == "multilingual" for spec in fleurs.values()) == 21
    assert {name for name, spec in fleurs.items() if spec.get("metric") == "cer"} == {"fleurs_ja", "fleurs_zh"}
    english = {spec["dataset"]["name"] for spec in sets.values() if spec["role"] == "english"}
    assert english == {"ami", "common_voice", "earnings22", "gigaspeech", "librispeech", "spgispeech", "tedlium",
                       "voxpopuli"}
    assert config["base_model"] == {"source": "pretrained", "path": "openai/whisper-large-v3", "audio_seconds": 30,
                                    **{k: v for k, v in config["base_model"].items() if k not in ("source", "path", "audio_seconds")}}
    domain, joint = config["finetune"]["domain"], config["finetune"]["joint"]
    assert domain["learning_rate"] == 2e-6 and domain["batch_size"] * domain["gradient_accumulation"] == 256
    assert joint["learning_rate"] == 1e-5 and joint["batch_size"] * joint["gradient_accumulation"] == 256
    for block in (domain, joint):
        assert block["precision"] == "bf16" and block["gradient_checkpointing"] is True
    assert config["evaluation"]["num_beams"] == 5
    branches = merge_branches(config)
    assert {b.method for b in branches} == PAPER_METHODS | BEYOND_THE_PAPER
    assert config["statistics"]["utterances"] == 256  # FusionBench's num_regmean_examples / num_fisher_examples
    by_id = {b.id: b for b in branches}
    assert by_id["pcb/pcb_ratio=0.05"].params["pcb_ratio"] == 0.05
    assert by_id["tsv_m/orthogonaliser=newton_schulz"].params["ns_steps"] == 5
    assert "tsv_m/orthogonaliser=svd" in by_id and "iso_cts/orthogonaliser=newton_schulz" in by_id
    assert by_id["iso_cts/orthogonaliser=svd"].params["common_space_fraction"] == 0.8
    betas = [b.params["beta"] for b in branches if b.method == "boosted_tsv_m"]
    assert betas == pytest.approx([0.1 * i for i in range(1, 11)])
    assert all(b.params["orthogonaliser"] == "newton_schulz" for b in branches if b.method == "boosted_tsv_m")
    ties = by_id["ties/density=0.2"]
    assert ties.params == {"density": 0.2, "scope": "tensor", "aggregation": "mean"}
    assert ties.lambdas == pytest.approx([0.1 * i for i in range(1, 11)])
    assert by_id["karcher/default"].params == {"max_iter": 10, "tol": 1e-5}
    assert by_id["sce/default"].params["select_topk"] == 1.0
    assert by_id["iso_c/default"].lambdas[-1] == 3.0 and len(by_id["iso_c/default"].lambdas) == 30
    assert by_id["karcher/default"].lambdas == (1.0,)
    assert requested_figures(config, branches) == ["wer_by_system", "id_vs_ood", "heatmap", "lambda_curves",
                                                   "beta_sweep", "spectra", "effective_rank"]


def test_paper_config_dry_run_lists_every_job(paper_config):
    path, config, hf_home = paper_config
    result = subprocess.run(
        [*_offline(), sys.executable, "-m", "snakemake", "--dry-run", "--cores", "8", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(ROOT), "--configfile", str(path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
             "HF_HOME": str(hf_home)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    outputs = set()
    for line in re.findall(r"^\s+output: (.+)$", out, re.MULTILINE):
        outputs.update(p.strip() for p in line.split(", "))  # labels hold "," without a space
    results = config["results"]
    sets = list(config["corpus"]["sets"])
    validated = validate_config(yaml.safe_load(yaml.safe_dump(config)), workdir=ROOT)
    for domain in domains(validated):
        assert f"{results}/models/finetuned/{domain}" in outputs, domain
        assert f"{results}/task_vectors/{domain}.safetensors" in outputs, domain
        assert f"{results}/scores/finetuned/{domain}.json" in outputs, domain
    branches = merge_branches(validated)
    assert len(branches) == 4 + 4 + 1 + 2 + 2 + 10 + 2 + 2
    for branch in branches:
        assert f"{results}/merges/{branch.id}/task_vector.safetensors" in outputs, branch.id  # merge
        assert f"{results}/selection/{branch.id}.json" in outputs, branch.id  # select_lambda
        assert f"{results}/hypotheses/merged/{branch.id}/pt_br.jsonl" in outputs, branch.id  # decode_merged
        assert f"{results}/scores/merged/{branch.id}.json" in outputs, branch.id
    for name in sets:
        assert f"{results}/data/{name}/manifest.jsonl" in outputs, name
    for model in ("base", "joint"):
        assert f"{results}/models/{model}" in outputs and f"{results}/scores/{model}.json" in outputs
    for figure in ("beta_sweep", "spectra", "effective_rank", "lambda_curves", "heatmap"):
        assert f"{results}/figures/{figure}.png" in outputs, figure
    assert f"{results}/tables/paper.tex" in outputs
    for domain in domains(validated):
        for kind in ("gram", "fisher"):
            assert f"{results}/statistics/{domain}/{kind}.safetensors" in outputs, (domain, kind)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], re.MULTILINE))
    assert counts["finetune_domain"] == "10" and counts["task_vector"] == "10"
    assert counts["merge"] == counts["select_lambda"] == counts["decode_merged"] == str(len(branches))
    assert counts["decode_model"] == "12" and counts["score"] == str(12 + len(branches))
    assert counts["statistics"] == "20" and counts["adamerging_coefficients"] == "2"


def test_whisper_base_config_runs_the_papers_methods_on_the_whole_world(tmp_path):
    """experiments/whisper-base.yaml (`make whisper-base`): real Whisper base on every scored set of the demo world,
    with every method of the paper. Validated against a stand-in base folder (the import writes the real one)."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "whisper-base").symlink_to(ROOT / "assets" / "foundation")
    config = validate_config(yaml.safe_load((ROOT / "experiments" / "whisper-base.yaml").read_text()), tmp_path)
    demo = validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()), ROOT)
    assert scored_sets(config) == scored_sets(demo) and len(domains(config)) == 10
    assert {b.method for b in merge_branches(config)} == PAPER_METHODS
    assert config["base_model"]["path"] == "assets/whisper-base"


def _offline() -> list[str]:
    """A command prefix that runs without any network (a new network namespace) where the system allows it."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []  # the HF_*_OFFLINE variables still make any hub access an error
