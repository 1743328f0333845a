"""Shared pytest fixtures: tiny random Whisper checkpoints (base + perturbed "fine-tuned" copies), the session's micro
workflow run, and the grouping of tests side by side."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

# One OpenMP thread for the tests and the commands they start, as every workflow job runs (profiles/default): their
# tensors are small, and on a shared 2-core machine a second thread spins more than it computes (the fast tier beside
# other work took less than half the CPU and wall time with one). Tests of running things side by side set their own
# thread count.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

#: The groups of tests that take longest (minutes of workflow runs), started first when modules run side by side.
MICRO_RUN_GROUP = "micro_workflow"
LONGEST_FIRST = (MICRO_RUN_GROUP, "test_real_whisper")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Side by side (pytest-xdist, `--dist loadgroup`) a test module runs on one worker, so its module fixtures (a
    SLURM cluster, a real-Whisper run) are made once; the modules with a test of the session's micro run (fixture
    `micro_run`) run on one worker together, so that run is made once. The longest groups come first (a worker takes
    the next group when it is free); in the micro run's group, the modules that make a run of their own beside it
    (they ask for `micro_run` and start it themselves) come first, so the two runs overlap; the rest keep their order.
    tests/test_xdist_groups.py checks that pytest-xdist honours the groups."""
    fixtures = {item.nodeid: set(getattr(item, "fixturenames", ())) for item in items}
    on_micro_run = {item.module.__name__ for item in items if "micro_run" in fixtures[item.nodeid]}
    beside_micro_run = {item.module.__name__ for item in items
                        if "micro_run" in fixtures[item.nodeid] and "micro_workflow" not in fixtures[item.nodeid]}
    groups = {}
    for item in items:
        module = item.module.__name__
        group = MICRO_RUN_GROUP if module in on_micro_run else module
        item.add_marker(pytest.mark.xdist_group(group))
        groups[item.nodeid] = group
    rank = {group: index for index, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: (rank.get(groups[item.nodeid], len(rank)), item.module.__name__ not in beside_micro_run))


TINY_WHISPER = dict(
    vocab_size=40,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_source_positions=20,
    max_target_positions=16,
    num_mel_bins=8,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
    suppress_tokens=None,
    begin_suppress_tokens=None,
)


def _save_tiny_whisper(folder: Path, seed: int, dtype: torch.dtype) -> Path:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).to(dtype)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('{"feature_size": 8}')
    return folder


def _perturb(base: Path, folder: Path, seed: int, scale: float) -> Path:
    """Copy `base` and add seeded noise to every float tensor except the frozen encoder positional table."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, folder)
    tensors = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and "encoder.embed_positions" not in name:
            noise = torch.randn(tensor.shape, generator=gen) * scale
            tensors[name] = (tensor.float() + noise).to(tensor.dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def tiny_whisper_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, list[Path]]]:
    """factory(num_finetuned=3, dtype=torch.float32) -> (base_dir, [finetuned_dir, ...]); results are cached."""
    cache: dict[tuple[int, torch.dtype], tuple[Path, list[Path]]] = {}

    def make(num_finetuned: int = 3, dtype: torch.dtype = torch.float32) -> tuple[Path, list[Path]]:
        key = (num_finetuned, dtype)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"whisper_{num_finetuned}_{str(dtype).split('.')[-1]}")
            base = _save_tiny_whisper(root / "base", seed=0, dtype=dtype)
            finetuned = [_perturb(base, root / f"ft{i}", seed=100 + i, scale=0.02) for i in range(num_finetuned)]
            cache[key] = (base, finetuned)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_whisper(tiny_whisper_factory: Callable[..., tuple[Path, list[Path]]]) -> tuple[Path, list[Path]]:
    """(base_dir, [three fine-tuned dirs]) of a tiny float32 Whisper."""
    return tiny_whisper_factory()


# ---------------------------------------------------------------------------------------------------------------------
# The session's micro workflow run, shared by every test module that reads its outputs (`micro_workflow`, finished), and
# by tests/test_slurm.py, which starts it beside its own SLURM run (`micro_run`).
# ---------------------------------------------------------------------------------------------------------------------


class MicroRun:
    """The micro config run into a temporary folder, started once: `start()` returns at once, so a test that makes a
    run of its own (tests/test_slurm.py) can make it beside this one; `result()` waits for it. `environment`: variables
    set for the run besides this process's; `name`: of its results folder, config and log in `tmp` (a path within it),
    so that two runs in one `tmp` (made before either starts) read the same local datasets."""

    TIMEOUT_S = 1200

    def __init__(self, tmp: Path, environment: dict[str, str] | None = None, name: str = "results"):
        import hf_fixtures
        import yaml

        self.root = Path(__file__).resolve().parents[1]
        self.config = yaml.safe_load((self.root / "tests" / "data" / "micro_config.yaml").read_text())
        self.config["results"] = str(tmp / name)
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        # and three test sets read from Hugging Face datasets (local copies in the Hub's layouts), as users name theirs
        self.config["corpus"]["sets"].update(hf_fixtures.dataset_sets(tmp / "datasets"))
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log = tmp / f"{name}.log"
        self.environment = {**os.environ, "PYTHONHASHSEED": "0", **(environment or {})}
        self._proc = None

    def start(self, targets: tuple[str, ...] = ()) -> None:
        """Start the run: the whole config, or only what `targets` (files of the run) need."""
        if self._proc is None:
            with open(self.log, "w") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "snakemake", *targets, "--cores", "2", "--snakefile",
                     str(self.root / "Snakefile"), "--directory", str(self.root), "--configfile", str(self.config_path)],
                    stdout=log, stderr=subprocess.STDOUT, env=self.environment)

    def result(self) -> tuple[Path, Path, dict]:
        """(config path, results folder, config dict) once the run has finished; fails the test if it did not."""
        self.start()
        try:
            returncode = self._proc.wait(timeout=self.TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise
        assert returncode == 0, self.log.read_text()[-6000:]
        return self.config_path, Path(self.config["results"]), self.config

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait()


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory: pytest.TempPathFactory):
    """The session's micro run, not yet waited for (`micro_workflow` waits for it)."""
    tmp = tmp_path_factory.mktemp("micro_workflow")
    run = MicroRun(tmp)
    yield run
    run.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def micro_workflow(micro_run: MicroRun) -> tuple[Path, Path, dict]:
    """(config path, results folder, config dict) of the micro config run once into a temporary folder."""
    return micro_run.result()
