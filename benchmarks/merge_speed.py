"""Merge speed and memory: asrmerge against mergekit and FusionBench, same checkpoints, same methods, one table.

Run on purpose, not in the tests (`make bench-merge`, or):

    .venv/bin/python benchmarks/merge_speed.py [--scale small|toy|tiny|base|medium|large-v3] [--tasks 10]
        [--methods ties,tsv_m] [--libraries ours,mergekit,fusionbench] [--threads N] [--seed 0] [--update]
    .venv/bin/python benchmarks/merge_speed.py --write-doc .bench/merge-speed/results-small-T10.json

What it does:
1. Virtual environments benchmarks/.venvs/mergekit and benchmarks/.venvs/fusionbench (pinned mergekit / fusion-bench
   with the project's CPU torch), created on first use.
2. Synthetic checkpoints in the work folder (default .bench/merge-speed, reused when present; the same seed gives
   the same files): a base at Whisper-small geometry built from its transformers config (`--scale small`: d_model 768,
   12 + 12 layers, 12 heads, FFN 3072, vocab 51865, 80 mel bins, 1500/448 positions, ~242M parameters, float32,
   safetensors) with random weights, and T "fine-tuned" checkpoints θ_t = θ₀ + τ_t whose task vectors have the
   structure of real ones: per matrix a low-rank part shared by the tasks, a low-rank part of the task's own, dense
   noise and sparse large outliers; the encoder's sinusoidal positions stay frozen (τ = 0). `--scale toy` is a toy
   geometry (~0.6M parameters) for checking the script in seconds.
3. Every method of asrmerge's registry as its CLI, fine-tuned checkpoints → merged model folder in one pass
   (`asrmerge merge --finetuned ... --out-model DIR --lambda 1`), and, on the same files, the same method in mergekit
   (`mergekit-yaml`, see merge_speed_mergekit.py) and in FusionBench (its algorithm class on a model pool, see
   merge_speed_fusionbench.py) where they have it, with the parameters set equal. Each run is its own process: wall
   clock, and peak resident memory from the rusage that `os.wait4` returns. Before every run the inputs are read
   once (so every library starts from the same, warm page cache); after it `sync` flushes the written output
   outside the timing. A run whose resident memory passes --memory-limit-gib is stopped and reported as such.
4. The I/O floor: a process that reads every input file once and writes (and fsyncs) one file of the merged model's
   size, measured the same way.
5. Outputs are compared with asrmerge's: the maximum absolute difference over all tensors, or n/a with the reason
   where the semantics differ (random drop masks, other definitions).

Prints one Markdown table (and writes it, with the raw numbers as JSON, to the work folder). Every run records the
invocation that measured it, and a ratio (library ÷ library, asrmerge ÷ I/O floor) is only taken between runs of one
invocation: `--update` re-measures the rows it is given into the previous results, keeping the cells of the
libraries it does not re-run, and takes no ratio between those and the new ones (give it every library of the row to
have them). `--write-doc` writes the table of a results file into docs/measured/merge-speed.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from asrmerge.layout import MODEL_WEIGHTS
from asrmerge.atomic import write_json, write_section, write_text

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / "benchmarks" / ".venvs"
TORCH_SPEC = "torch==2.13.0"
LIBRARIES = {
    "mergekit": [TORCH_SPEC, "mergekit==0.1.5"],
    "fusionbench": [TORCH_SPEC, "fusion-bench==0.2.33"],
}
GIB = 1024**3
#: How a run stopped at its memory limit begins its status ("stopped at 16.0 GiB").
STOPPED_AT = "stopped at"
#: The results page and the lines around the table that `--write-doc` replaces.
DOC_PAGE = ROOT / "docs" / "measured" / "merge-speed.md"
DOC_MARKERS = ("<!-- merge-speed:begin -->", "<!-- merge-speed:end -->")



def _whisper(d_model: int, layers: int, heads: int, vocab_size: int = 51865, num_mel_bins: int = 80) -> dict[str, Any]:
    """The WhisperConfig values that set the tensor shapes of a released Whisper (FFN 4·d_model, 1500/448 positions)."""
    return dict(d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
                vocab_size=vocab_size, num_mel_bins=num_mel_bins, max_source_positions=1500, max_target_positions=448)


#: Geometries: the released Whisper sizes (transformers' configs of openai/whisper-tiny … large-v3), and a toy for
#: checking the script in seconds.
SCALES: dict[str, dict[str, Any]] = {
    "tiny": _whisper(384, 4, 6),
    "base": _whisper(512, 6, 8),
    "small": _whisper(768, 12, 12),
    "medium": _whisper(1024, 24, 16),
    "large-v3": _whisper(1280, 32, 20, vocab_size=51866, num_mel_bins=128),
    "toy": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=1000, num_mel_bins=80, max_source_positions=150,
                 max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                 suppress_tokens=None, begin_suppress_tokens=None),
}
#: Structure of the synthetic task vectors (per matrix: entries of the low-rank parts ~ LOWRANK_STD).
RANK, LOWRANK_STD, NOISE_STD, OUTLIER_FRACTION, OUTLIER_SIZE = 8, 1e-3, 2e-4, 1e-3, 1e-2
DATA_VERSION = 1

# ------------------------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Row:
    """One line of the table: an asrmerge method with its parameters and the equivalent runs of the other libraries.

    mergekit: (merge_method, per-model parameters, global parameters, use base_model) or None.
    fusionbench: (algorithm class, constructor kwargs) or None.
    Notes (keyed by library): why it is absent, why outputs cannot be compared (the diff is then n/a), and footnotes
    on a difference, or on a failure, whose cause is known.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    mergekit: tuple[str, dict[str, Any], dict[str, Any], bool] | None = None
    fusionbench: tuple[str, dict[str, Any]] | None = None
    absent: dict[str, str] = field(default_factory=dict)
    no_diff: dict[str, str] = field(default_factory=dict)
    diff_note: dict[str, str] = field(default_factory=dict)
    failure_note: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.method} ({shown})" if shown else self.method


def rows(exclude_keys: list[str]) -> list[Row]:
    """The methods of the table. `exclude_keys`: the Whisper tensors asrmerge keeps out of SVDs (given to FusionBench's
    subspace methods as exclude_keys, so both take the mean there)."""
    random = "random drop masks"
    cutoff = ("Only entries whose |τ| equals the cut-off exactly differ: which of several equal magnitudes is kept is "
              "arbitrary (mergekit: argsort or an unstable sort; asrmerge: torch.topk or a stable sort), and τ = "
              "θ_t − θ₀ in float32 has many exactly equal values (at the toy scale, with fewer entries, the "
              "difference is 0).")
    return [
        Row("model_soup", mergekit=("linear", {"weight": 1.0}, {"normalize": True}, False),
            fusionbench=("SimpleAverageAlgorithm", {})),
        Row("task_arithmetic", mergekit=("task_arithmetic", {"weight": 1.0}, {"normalize": False, "lambda": 1.0}, True),
            fusionbench=("TaskArithmeticAlgorithm", {"scaling_factor": 1.0})),
        Row("ties", {"density": 0.2, "scope": "tensor", "aggregation": "mean"},
            mergekit=("ties", {"weight": 1.0, "density": 0.2}, {"normalize": True}, True),
            absent={"fusionbench": "trims over the whole model: next row"}, diff_note={"mergekit": cutoff}),
        Row("ties", {"density": 0.2, "scope": "global", "aggregation": "sum"},
            fusionbench=("TiesMergingAlgorithm", {"scaling_factor": 1.0, "threshold": 0.2, "remove_keys": [],
                                                  "merge_func": "sum"}),
            absent={"mergekit": "trims per tensor: row above"},
            diff_note={"fusionbench": "FusionBench flattens the model's state dict, in which the tied proj_out.weight "
                                     "repeats the token embedding, so the embedding enters the model-wide TIES "
                                     "threshold twice (its remove_keys option cannot drop it: loading the merged "
                                     "state dict then fails). asrmerge's ties on that same flat vector matches "
                                     "FusionBench exactly."}),
        Row("pcb"),
        Row("sce", {"select_topk": 1.0}, mergekit=("sce", {"weight": 1.0}, {"select_topk": 1.0}, True)),
        Row("model_stock", mergekit=("model_stock", {}, {"filter_wise": False}, True),
            fusionbench=("ModelStock", {}),
            no_diff={"fusionbench": "averages the pairwise angles, asrmerge and mergekit the cosines"}),
        Row("karcher", mergekit=("karcher", {}, {"max_iter": 10, "tol": 1e-5}, False),
            diff_note={"mergekit": "In the layer-norm weights: their fine-tunes (all near 1) are ~1e-4 rad apart, "
                                   "below what mergekit's float32 arccos(⟨u_t, m⟩) resolves; asrmerge takes the angle "
                                   "from the chord and lands within 2e-7 of the float64 Karcher mean there, mergekit "
                                   "5.6e-4 away."}),
        Row("multislerp", mergekit=("multislerp", {"weight": 1.0}, {}, True),
            failure_note={"mergekit": "mergekit's multislerp stops with 'The weighted sum of the input tensors is zero' on "
                                  "a tensor whose task vectors are all zero (the frozen encoder positional table); "
                                  "asrmerge returns the linear average there."}),
        Row("iso_c", fusionbench=("ISO_C_Merge", {"scaling_factor": 1.0, "exclude_keys": exclude_keys})),
        Row("iso_cts", {"common_space_fraction": 0.8},
            fusionbench=("ISO_CTS_Merge", {"scaling_factor": 1.0, "common_space_fraction": 0.8,
                                           "exclude_keys": exclude_keys}),
            failure_note={"fusionbench": "FusionBench's iso_cts stops at model.encoder.layers.4.fc2.weight (768 × 3072): "
                                         "torch.linalg.svd of the concatenated Vᵀ basis (nearly orthonormal rows, "
                                         "clustered singular values) fails to converge (LAPACK gesdd, error 1). "
                                         "asrmerge takes that SVD on the tall transpose and computes an SVD that "
                                         "LAPACK cannot converge again in float64 (with one LAPACK thread per "
                                         "tensor, the float32 SVD of a concatenated U basis failed the same way)."}),
        Row("tsv_m", fusionbench=("TaskSingularVectorMerging", {"alpha": 1.0, "exclude_keys": exclude_keys})),
        Row("boosted_tsv_m"),
        Row("dare", {"p": 0.9},
            fusionbench=("DareTaskArithmetic", {"scaling_factor": 1.0, "sparsity_ratio": 0.9,
                                                "only_on_linear_weights": False, "rescale": True}),
            absent={"mergekit": "rescales by L1 norm: next row"}, no_diff={"fusionbench": random}),
        Row("dare", {"p": 0.9, "rescale": "l1_match"},
            mergekit=("dare_linear", {"weight": 1.0, "density": 0.1}, {"normalize": False, "rescale": True}, True),
            absent={"fusionbench": "rescales by 1/(1-p): row above"}, no_diff={"mergekit": random}),
        Row("breadcrumbs", {"density": 0.9, "gamma": 0.01},
            mergekit=("breadcrumbs", {"weight": 1.0, "density": 0.9, "gamma": 0.01}, {"normalize": False}, True),
            diff_note={"mergekit": cutoff}),
        Row("della", {"density": 0.5, "epsilon": 0.15},
            mergekit=("della", {"weight": 1.0, "density": 0.5, "epsilon": 0.15},
                      {"normalize": True, "rescale": True, "lambda": 1.0}, True),
            no_diff={"mergekit": random}),
        Row("star"),
        Row("consensus_ta", absent={"fusionbench": "its TALL-mask algorithm returns one model per task"}),
    ]


# ------------------------------------------------------------------------------------------------------ environments


def ensure_venv(name: str) -> Path:
    """benchmarks/.venvs/NAME with the pinned packages (created or completed when its marker differs)."""
    folder = VENVS / name
    python = folder / "bin" / "python"
    marker = folder / ".installed"
    spec = " ".join(LIBRARIES[name])
    if marker.is_file() and marker.read_text() == spec and python.exists():
        return python
    print(f"[setup] {folder}: pip install {spec}", flush=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *LIBRARIES[name]],
                   check=True)
    marker.write_text(spec)
    return python


# ------------------------------------------------------------------------------------------------ synthetic checkpoints


def _generator(seed: int, key: str):
    import torch

    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _base_tensor(name: str, shape: tuple[int, ...], seed: int):
    import torch

    values = torch.randn(shape, generator=_generator(seed, "base/" + name)) * 0.02
    if name.endswith("layer_norm.weight"):
        values += 1
    return values


def _low_rank(shape: tuple[int, ...], seed: int, key: str):
    import torch

    gen = _generator(seed, key)
    left = torch.randn(shape[0], RANK, generator=gen)
    right = torch.randn(RANK, math.prod(shape[1:]), generator=gen)
    return ((left @ right) * (LOWRANK_STD / math.sqrt(RANK))).reshape(shape)


def _task_vector(name: str, shape: tuple[int, ...], seed: int, task: int):
    """τ_t of one tensor: (for matrices) 0.5·shared low-rank + own low-rank, plus dense noise and sparse outliers."""
    import torch

    if "encoder.embed_positions" in name:  # sinusoidal table, frozen in fine-tuning
        return torch.zeros(shape)
    gen = _generator(seed, f"task{task}/{name}")
    tau = torch.randn(shape, generator=gen) * NOISE_STD
    if len(shape) == 2:
        tau += 0.5 * _low_rank(shape, seed, f"shared/{name}") + _low_rank(shape, seed, f"own{task}/{name}")
    flat = tau.view(-1)
    count = max(1, int(flat.numel() * OUTLIER_FRACTION))
    where = torch.randint(0, flat.numel(), (count,), generator=gen)
    flat[where] += OUTLIER_SIZE * torch.sign(torch.randn(count, generator=gen))
    return tau


def build_checkpoints(folder: Path, scale: str, tasks: int, seed: int, dtype: str = "float32") -> tuple[Path, list[Path]]:
    """base/ and ft00/ .. ft{T-1}/ under `folder` (transformers Whisper folders, safetensors of `dtype`: float32, or
    float16 as Whisper is released, where θ_t is θ₀ + τ_t rounded); reused when the marker matches (scale, tasks,
    seed, dtype, data version)."""
    spec = {"scale": scale, "tasks": tasks, "seed": seed, "version": DATA_VERSION, "geometry": SCALES[scale],
            **({"dtype": dtype} if dtype != "float32" else {})}
    base, finetuned = folder / "base", [folder / f"ft{t:02d}" for t in range(tasks)]
    marker = folder / "checkpoints.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return base, finetuned
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from asrmerge.merging.checkpoint import SafetensorsWriter, TensorEntry

    print(f"[setup] writing {tasks + 1} synthetic checkpoints ({scale}) to {folder}", flush=True)
    if folder.exists():
        shutil.rmtree(folder)
    config = WhisperConfig(**SCALES[scale])
    config.architectures = ["WhisperForConditionalGeneration"]
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tied = {"proj_out.weight"} if config.tie_word_embeddings else set()
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items() if n not in tied}
    names = sorted(shapes)
    stored = getattr(torch, dtype)
    entries = [TensorEntry(n, stored, shapes[n]) for n in names]
    staging = folder.with_name(folder.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    writers = []
    for target in (base, *finetuned):
        out = staging / target.name
        out.mkdir(parents=True)
        config.save_pretrained(out)
        writers.append(SafetensorsWriter(out / MODEL_WEIGHTS, entries, {"format": "pt"}).__enter__())
    for name in names:
        theta0 = _base_tensor(name, shapes[name], seed)
        writers[0].write(name, theta0.to(stored))
        for task, writer in enumerate(writers[1:]):
            writer.write(name, (theta0 + _task_vector(name, shapes[name], seed, task)).to(stored))
    for writer in writers:
        writer.__exit__(None, None, None)
    os.replace(staging, folder)
    marker.write_text(json.dumps(spec))
    return base, finetuned


# -------------------------------------------------------------------------------------------------------- measuring


@dataclass
class Run:
    seconds: float | None = None
    peak_gib: float | None = None
    status: str = "ok"  # ok | failed (rc N) | stopped at X GiB | timeout
    log: str = ""
    cpu_seconds: float | None = None  # user + system time of the measured process
    others: float | None = None  # share of the machine's CPU time that other processes used meanwhile
    invocation: str = ""  # the benchmark invocation that measured it (INVOCATIONS key): ratios stay within one

    @property
    def disturbed(self) -> bool:
        """Other processes used more than 10 % of the CPUs during the run: its time is not clean."""
        return bool(self.others and self.others > 0.10)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def stopped_at_memory_limit(self) -> bool:
        """Stopped when its resident memory passed the limit: its peak is a lower bound of what it needed."""
        return self.status.startswith(STOPPED_AT)


def _session_rss(session: int) -> int:
    """Resident bytes of every process in a session (the measured command and anything it started)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[3]) != session:
                continue
            total += int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


def child_mode(report: str, cmd: list[str]) -> None:
    """--measure-child mode: spawn `cmd`, wait for it, write its wall clock and rusage peak RSS to `report`.

    The measured command is spawned from this small process, not from the benchmark (which holds torch): a process's
    ru_maxrss starts from the resident size of the process it was started from, so this keeps that to a few MiB."""
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, dict(os.environ))
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    Path(report).write_text(json.dumps({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "returncode": code,
                                        "cpu_seconds": usage.ru_utime + usage.ru_stime}))
    sys.exit(0 if code == 0 else 1)


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting on I/O) since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(cmd: Sequence[str], env: dict[str, str], log_path: Path, timeout: float, memory_limit: float) -> Run:
    """Run `cmd` in its own session (through `child_mode`); wall clock and peak RSS from os.wait4's rusage; stop it
    past the time or memory limit."""
    verdict: list[str] = []
    report = log_path.with_suffix(".json")
    report.unlink(missing_ok=True)
    seen = [0]
    busy = _busy_cpu_seconds()
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--measure-child", str(report), *cmd],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(0.1):
                seen[0] = max(seen[0], rss := _session_rss(proc.pid))
                if rss > memory_limit:
                    verdict.append(f"{STOPPED_AT} {memory_limit / GIB:.1f} GiB")
                elif time.perf_counter() - start > timeout:
                    verdict.append("timeout")
                else:
                    continue
                os.killpg(proc.pid, signal.SIGKILL)
                return

        thread = threading.Thread(target=watchdog, daemon=True)
        thread.start()
        proc.wait()
        seconds = time.perf_counter() - start
        done.set()
        thread.join()
    busy = _busy_cpu_seconds() - busy
    if report.is_file():
        measured = json.loads(report.read_text())
        run = Run(seconds=measured["seconds"], peak_gib=measured["maxrss_kib"] * 1024 / GIB, log=str(log_path),
                  cpu_seconds=measured["cpu_seconds"])
        run.others = max(0.0, busy - run.cpu_seconds) / (seconds * (os.cpu_count() or 1))
        if measured["returncode"] != 0:
            run.status = f"failed (rc {measured['returncode']})"
    else:
        run = Run(seconds=seconds, peak_gib=seen[0] / GIB, log=str(log_path), status=f"failed (rc {proc.returncode})")
    if verdict:
        run.status = verdict[0]
    return run


def warm(paths: Sequence[Path]) -> None:
    """Read every file once, so that each run starts from the same page cache."""
    buffer = bytearray(64 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buffer):
                pass


def io_floor_worker(args: argparse.Namespace) -> None:
    """--io-floor mode: read every input once, write (and fsync) one file of the given size."""
    buffer = bytearray(64 << 20)
    for path in args.io_floor:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buffer):
                pass
    remaining = args.io_floor_bytes
    view = memoryview(buffer)
    with open(args.io_floor_out, "wb", buffering=0) as fh:
        while remaining > 0:
            remaining -= fh.write(view[: min(remaining, len(buffer))])
        os.fsync(fh.fileno())


def max_abs_diff(ours: Path, theirs: Path) -> tuple[float, str]:
    """Max |ours − theirs| over asrmerge's tensors (float32), and a note on missing tensors or NaN."""
    import torch

    from asrmerge.merging.checkpoint import open_checkpoint

    worst, notes = 0.0, []
    with open_checkpoint(ours) as a, open_checkpoint(theirs) as b:
        missing = [n for n in a.float_names if n not in b.files]
        if missing:
            notes.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
        for name in a.float_names:
            if name in missing:
                continue
            if b.shapes[name] != a.shapes[name]:
                notes.append(f"{name}: shape {b.shapes[name]}")
                continue
            x, y = a.get_float(name, check_finite=False), b.get_float(name, check_finite=False)
            if not bool(torch.isfinite(y).all()):
                notes.append(f"NaN/Inf in {name}")
                continue
            worst = max(worst, float((x - y).abs().max()) if x.numel() else 0.0)
    return worst, "; ".join(notes)


# ------------------------------------------------------------------------------------------------------------ running


def _param_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def command_ours(row: Row, base: Path, finetuned: list[Path], out: Path) -> list[str]:
    cli = Path(sys.executable).with_name("asrmerge")
    cmd = [str(cli), "merge", "--method", row.method, "--base", str(base), "--finetuned", *map(str, finetuned),
           "--out-model", str(out), "--lambda", "1.0"]
    for key, value in row.params.items():
        cmd += ["--param", f"{key}={_param_text(value)}"]
    return cmd


def command_mergekit(row: Row, python: Path, base: Path, finetuned: list[Path], out: Path, work: Path,
                     threads: int | None) -> list[str]:
    import yaml

    method, model_params, global_params, use_base = row.mergekit
    config: dict[str, Any] = {"merge_method": method,
                              "models": [{"model": str(f), **({"parameters": model_params} if model_params else {})}
                                         for f in finetuned],
                              "dtype": "float32", "out_dtype": "float32"}
    if use_base:
        config["base_model"] = str(base)
    if global_params:
        config["parameters"] = global_params
    path = work / "mergekit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(python), str(ROOT / "benchmarks" / "merge_speed_mergekit.py"), str(path), str(out)]
    return cmd + (["--num-threads", str(threads)] if threads else [])


def command_fusionbench(row: Row, python: Path, base: Path, finetuned: list[Path], out: Path, work: Path) -> list[str]:
    algorithm, kwargs = row.fusionbench
    spec = {"algorithm": algorithm, "kwargs": kwargs, "base": str(base), "finetuned": [str(f) for f in finetuned],
            "out": str(out)}
    path = work / "fusionbench.json"
    path.write_text(json.dumps(spec, indent=1))
    return [str(python), str(ROOT / "benchmarks" / "merge_speed_fusionbench.py"), str(path)]


def io_floor_command(inputs: Sequence[Path], out: Path) -> list[str]:
    """The I/O floor's process: read every input once, write (and fsync) one file of the first input's size."""
    return [sys.executable, str(Path(__file__).resolve()), "--io-floor", *map(str, inputs), "--io-floor-out", str(out),
            "--io-floor-bytes", str(inputs[0].stat().st_size)]


#: What `startup_command` measures, as the tables say it.
STARTUP_WHAT = "the merge command's imports, the engine's (torch) included, and its argument parser"


def startup_command() -> list[str]:
    """asrmerge's start-up alone (STARTUP_WHAT): the part of every asrmerge merge that the I/O floor does not have.
    `asrmerge merge --help` would not import the engine (it is imported when the merge starts)."""
    return [sys.executable, "-c", "import asrmerge.merging.engine; from asrmerge.cli import build_parser; build_parser()"]


def run_env(threads: int | None) -> dict[str, str]:
    """The environment of every measured process: offline, unbuffered, `threads` CPU threads when given."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo."""
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable:"))


def geometry_of(base: Path) -> tuple[int, list[str]]:
    """The base's parameter count, and the tensors asrmerge keeps out of SVDs (FusionBench's exclude_keys)."""
    from asrmerge.merging import DEFAULT_SVD_EXCLUDE
    from asrmerge.merging.checkpoint import open_checkpoint

    with open_checkpoint(base) as ckpt:
        names = ckpt.names
        params = sum(ckpt.numel(n) for n in names)
    return params, [n for n in names if any(re.search(p, n) for p in DEFAULT_SVD_EXCLUDE)] + ["proj_out.weight"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM"


def _fmt_run(run: Run | None, note: str = "") -> tuple[str, str]:
    if run is None:
        return ("–", "–") if not note else (f"– ({note})", "–")
    if not run.ok:
        return (run.status, f"{run.peak_gib:.2f}" if run.peak_gib else "–")
    return f"{run.seconds:.1f}" + ("*" if run.disturbed else ""), f"{run.peak_gib:.2f}"


#: The ratio cell of two runs from different invocations (machines and loads differ between them).
NO_RATIO = "no ratio ‡"


def _ratio(numerator: Run | None, denominator: Run | None, attr: str) -> str:
    """numerator ÷ denominator of `attr`, only for two runs of the same invocation."""
    if numerator is None or denominator is None or not numerator.ok:
        return "–"
    if numerator.invocation != denominator.invocation:
        return NO_RATIO
    if attr == "peak_gib" and denominator.stopped_at_memory_limit and denominator.peak_gib:
        return f"< {numerator.peak_gib / denominator.peak_gib:.2f}×"  # it needed more than it had when stopped
    if not denominator.ok:
        return "–"
    top, bottom = getattr(numerator, attr), getattr(denominator, attr)
    return f"{top / bottom:.2f}×" if bottom else "–"


def table(results: list[dict[str, Any]], floors: dict[str, Run]) -> str:
    """The Markdown table of `results` (rows of runs); `floors`: the I/O floor of each invocation. A table whose runs
    come from several invocations tags every time with its invocation's letter (A, B, … in the order of `floors`)."""
    notes: list[str] = []
    letters = {key: chr(ord("A") + i) for i, key in enumerate(floors)}

    def tagged(run: Run | None, note: str = "") -> tuple[str, str]:
        seconds, gib = _fmt_run(run, note)
        if run is not None and len(floors) > 1:
            seconds += f" ({letters.get(run.invocation, '?')})"
        return seconds, gib

    def marker(note: str | None) -> str:
        if not note:
            return ""
        if note not in notes:
            notes.append(note)
        return f" [{notes.index(note) + 1}]"

    def cells(result: dict[str, Any], library: str) -> tuple[str, str, str]:
        """(seconds, GiB, diff) of one library, with the footnote on the diff or on the status of a failed run."""
        row, run = result["row"], result.get(library)
        seconds, gib = tagged(run, row.absent.get(library, ""))
        difference = result.get(f"diff_{library}", "–")
        if run is not None and not run.ok:
            seconds += marker(row.failure_note.get(library))
        elif run is not None:
            difference += marker(row.diff_note.get(library))
        return seconds, gib, difference

    header = ("| method (parameters) | asrmerge s | GiB | ÷ I/O floor | mergekit s | GiB | mergekit ÷ asrmerge time "
              "| max abs diff vs mergekit | FusionBench s | GiB | FusionBench ÷ asrmerge time | asrmerge ÷ FusionBench "
              "memory | max abs diff vs FusionBench |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        row: Row = result["row"]
        ours, mk, fb = result.get("ours"), result.get("mergekit"), result.get("fusionbench")
        mk_s, mk_gib, mk_diff = cells(result, "mergekit")
        fb_s, fb_gib, fb_diff = cells(result, "fusionbench")
        floor = floors.get(ours.invocation) if ours is not None else None
        line = [row.label, *tagged(ours), _ratio(ours, floor, "seconds"), mk_s, mk_gib, _ratio(mk, ours, "seconds"),
                mk_diff, fb_s, fb_gib, _ratio(fb, ours, "seconds"), _ratio(ours, fb, "peak_gib"), fb_diff]
        lines.append("| " + " | ".join(line) + " |")
    lines += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)] if notes else []
    runs = [r.get(k) for r in results for k in ("ours", "mergekit", "fusionbench")]
    if any(run is not None and run.disturbed for run in runs):
        lines += ["", "\\* other processes used more than 10 % of the CPUs during that run."]
    if any(NO_RATIO in line for line in lines):
        lines += ["", "‡ the two runs come from different invocations of the benchmark: no ratio is taken between "
                  "them (re-measure every library of the row in one invocation)."]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--measure-child"]:
        child_mode(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated asrmerge method names (default: all)")
    parser.add_argument("--libraries", default="ours,mergekit,fusionbench", help="subset of ours,mergekit,fusionbench")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small", help="a Whisper size, or toy (seconds)")
    parser.add_argument("--tasks", type=int, default=10, help="number of fine-tuned checkpoints T")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic checkpoints (and of random merges)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".bench" / "merge-speed")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every library (default: all cores)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a run is stopped")
    parser.add_argument("--memory-limit-gib", type=float, default=None,
                        help="stop a run past this resident memory (default: 85%% of the available memory)")
    parser.add_argument("--update", action="store_true",
                        help="merge these rows (and the I/O floor) into the previous results of the same scale and "
                             "tasks, to re-measure some rows")
    parser.add_argument("--io-floor", nargs="+", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--io-floor-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--io-floor-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write-doc", type=Path, metavar="RESULTS_JSON",
                        help=f"measure nothing: write the table of this results file into {DOC_PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.io_floor:
        io_floor_worker(args)
        return
    if args.write_doc:
        write_doc(json.loads(args.write_doc.read_text()), DOC_PAGE)
        return
    started = datetime.datetime.now(datetime.timezone.utc)
    invocation, started = started.strftime("%Y%m%dT%H%M%SZ"), started.strftime("%Y-%m-%d %H:%M UTC")

    libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    pythons = {name: ensure_venv(name) for name in libraries if name in LIBRARIES}
    folder = claim_work_dir(args.work_dir) / f"{args.scale}-T{args.tasks}-seed{args.seed}"
    base, finetuned = build_checkpoints(folder, args.scale, args.tasks, args.seed)
    inputs = [base / MODEL_WEIGHTS, *(f / MODEL_WEIGHTS for f in finetuned)]
    input_bytes = sum(p.stat().st_size for p in inputs)
    runs_dir = args.work_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)

    env = run_env(args.threads)
    memory_limit = args.memory_limit_gib * GIB if args.memory_limit_gib is not None else 0.85 * available_bytes()
    params, exclude_keys = geometry_of(base)
    selected = set(args.methods.split(",")) if args.methods else None
    table_rows = [r for r in rows(exclude_keys) if selected is None or r.method in selected]
    if selected and selected - {r.method for r in table_rows}:
        parser.error(f"unknown methods: {', '.join(sorted(selected - {r.method for r in table_rows}))}")

    # Interpreter and import caches warm, outside any timing.
    for name, python in pythons.items():
        module = {"mergekit": "mergekit.merge", "fusionbench": "fusion_bench.method"}[name]
        subprocess.run([str(python), "-c", f"import {module}, transformers"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", "import asrmerge.cli"], env=env, check=True)

    def timed(label: str, cmd: list[str], out: Path) -> Run:
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        warm(inputs)
        run = measure(cmd, env, runs_dir / f"{label}.log", args.timeout, memory_limit)
        run.invocation = invocation
        os.sync()
        print(f"  {label}: {run.status}, {run.seconds:.1f} s, {run.peak_gib:.2f} GiB", flush=True)
        return run

    floor_out = runs_dir / "floor.bin"
    floor = timed("io_floor", io_floor_command(inputs, floor_out), floor_out)
    floor_out.unlink(missing_ok=True)
    startup = timed("startup", startup_command(), runs_dir / "startup") if "ours" in libraries else None

    results: list[dict[str, Any]] = []
    for index, row in enumerate(table_rows):
        print(f"[{index + 1}/{len(table_rows)}] {row.label}", flush=True)
        slug = f"{index:02d}-{row.method}"
        result: dict[str, Any] = {"row": row}
        ours_out = runs_dir / f"{slug}-ours"
        if "ours" in libraries:
            result["ours"] = timed(f"{slug}-ours", command_ours(row, base, finetuned, ours_out), ours_out)
        for name in ("mergekit", "fusionbench"):
            if name not in libraries or getattr(row, name) is None:
                continue
            out = runs_dir / f"{slug}-{name}"
            if name == "mergekit":
                cmd = command_mergekit(row, pythons[name], base, finetuned, out, runs_dir, args.threads)
            else:
                cmd = command_fusionbench(row, pythons[name], base, finetuned, out, runs_dir)
            run = result[name] = timed(f"{slug}-{name}", cmd, out)
            if name in row.no_diff:
                result[f"diff_{name}"] = f"n/a ({row.no_diff[name]})"
            elif run.ok and result.get("ours") is not None and result["ours"].ok:
                worst, note = max_abs_diff(ours_out, out)
                result[f"diff_{name}"] = f"{worst:.2e}" + (f" ({note})" if note else "")
            if out.exists():
                shutil.rmtree(out)
        if ours_out.exists():
            shutil.rmtree(ours_out)
        results.append(result)

    stamp = f"{args.scale}-T{args.tasks}"
    document = {"invocations": {invocation: {
        "machine": machine(), "date": started, "threads": args.threads, "floor": floor.__dict__,
        **({"startup": startup.__dict__} if startup is not None else {}),
        "checkpoints": f"Whisper {args.scale} geometry ({params / 1e6:.1f}M parameters, float32), base + "
                       f"{args.tasks} fine-tuned, {input_bytes / 1e9:.2f} GB of inputs",
        "floor_file_gb": inputs[0].stat().st_size / 1e9}},
        "rows": [_row_record(r) for r in results]}
    previous = args.work_dir / f"results-{stamp}.json"
    if args.update and previous.is_file():
        document = merge_documents(json.loads(previous.read_text()), document)
    write_json(args.work_dir / f"results-{stamp}.json", document)
    text = render(document)
    print()
    print(text)
    write_text(args.work_dir / f"results-{stamp}.md", text)


def _row_record(result: dict[str, Any]) -> dict[str, Any]:
    return {"label": result["row"].label,
            **{k: (v.__dict__ if isinstance(v, Run) else v) for k, v in result.items() if k != "row"}}


def merge_documents(previous: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """--update: the fresh rows replace the previous ones of the same label (cells of libraries not re-run are kept,
    with their own invocation, so no ratio is taken between them and the fresh cells); invocations no row refers to
    any more are dropped."""
    if "invocations" not in previous:
        raise ValueError("the previous results were written by an older version of this benchmark (no invocations): "
                         "run without --update")
    by_label = {r["label"]: r for r in fresh["rows"]}
    merged = []
    for old in previous["rows"]:
        new = by_label.pop(old["label"], None)
        if new is None:
            merged.append(old)
            continue
        for name in ("mergekit", "fusionbench"):
            if name not in new and name in old:
                new[name] = old[name]
                new[f"diff_{name}"] = "not re-compared (--update)"
        merged.append(new)
    merged += by_label.values()
    invocations = {**previous["invocations"], **fresh["invocations"]}
    used = {cell["invocation"] for r in merged for cell in r.values() if isinstance(cell, dict)}
    return {"invocations": {k: v for k, v in invocations.items() if k in used}, "rows": merged}


def render(document: dict[str, Any]) -> str:
    """The Markdown of a results document: one head line per invocation (machine, date, inputs, I/O floor), the
    table in the order of the benchmark's rows, its notes."""
    order = {row.label: (i, row) for i, row in enumerate(rows([]))}  # labels do not depend on exclude_keys
    unknown = [r["label"] for r in document["rows"] if r["label"] not in order]
    if unknown:
        raise ValueError(f"results row {unknown[0]!r} is no row of this benchmark")
    results = []
    for record in sorted(document["rows"], key=lambda r: order[r["label"]][0]):
        result: dict[str, Any] = {"row": order[record["label"]][1]}
        for key, value in record.items():
            if key != "label":
                result[key] = Run(**value) if isinstance(value, dict) else value
        results.append(result)
    floors = {key: Run(**inv["floor"]) for key, inv in document["invocations"].items()}
    head = []
    for index, (key, inv) in enumerate(document["invocations"].items()):
        tag = f"Invocation {chr(ord('A') + index)}: " if len(floors) > 1 else ""
        head.append(f"{tag}{inv['machine']}; {inv['date']}; torch threads: {inv['threads'] or 'default (all cores)'}. "
                    f"{inv['checkpoints']}; asrmerge writes θ₀ + 1·τ to a model folder in one pass. I/O floor (read "
                    f"every input once, write and fsync one {inv['floor_file_gb']:.2f} GB file): "
                    f"{floors[key].seconds:.1f} s, {floors[key].peak_gib:.2f} GiB."
                    + (f" asrmerge start-up ({STARTUP_WHAT}): "
                       f"{inv['startup']['seconds']:.1f} s." if "startup" in inv else ""))
    head += [
        "Times are wall clock of the whole process (start-up, loading, merging, writing); GiB is its peak resident "
        "memory (rusage). Before each run every input is read once, so each library starts from the same warm page "
        "cache; after it, sync flushes its output outside the timing. Ratios are taken only between runs of one "
        "invocation.",
        "",
    ]
    return "\n\n".join(head[:-1]) + "\n\n" + table(results, floors) + "\n"


#: Marks a work folder as a benchmark's: the only kind whose generated checkpoints and outputs it deletes.
WORK_DIR_MARKER = ".asrmerge-benchmark"


def claim_work_dir(folder: Path) -> Path:
    """`folder` as a benchmark's work folder: created (and marked) when new, refused when it holds anything else."""
    if folder.is_dir() and any(folder.iterdir()) and not (folder / WORK_DIR_MARKER).exists():
        raise SystemExit(f"--work-dir {folder} holds files no benchmark wrote; name a new folder (its generated "
                         "checkpoints and outputs are deleted as it goes)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORK_DIR_MARKER).touch()
    return folder


def write_doc(document: dict[str, Any], page: Path) -> None:
    """Replace the table section of `page` (between its DOC_MARKERS) with `render(document)`."""
    write_section(page, DOC_MARKERS, render(document))

if __name__ == "__main__":
    main()
