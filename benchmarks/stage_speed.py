"""Per-stage speed of the demo's jobs, measured on copies of single jobs of a finished run, and the page that reports
it (docs/measured/speed.md), written from the result files this script saves.

    .venv/bin/python benchmarks/stage_speed.py decode   [--results results/demo] [--model base]
    .venv/bin/python benchmarks/stage_speed.py finetune [--results results/demo] [--domain banking] [--steps 12]
    .venv/bin/python benchmarks/stage_speed.py startup
    .venv/bin/python benchmarks/stage_speed.py run      [--results results/demo] [--conditions TEXT] [--make-log FILE]
    .venv/bin/python benchmarks/stage_speed.py tests [--target test-fast] [--name tests-X -- PYTEST_ARGS]  # timed
    .venv/bin/python benchmarks/stage_speed.py page     # docs/measured/speed.md from the files above

Every measurement writes one JSON file under .bench/stage-speed/ (the command, the machine's load, the numbers);
`page` reads only those files. The results folder is read, never written: models, manifests and audio are used in
place, outputs go to a temporary folder.

- decode: one model's decoding of every demo test set (the decode_model job), profiled by part (encoder, decoder
  steps, log-mel, voice-activity detection), with the earlier decoding path (transformers' decoder called for every
  token, each test set on its own) and the current one in the same process, their transcripts compared one by one
  and with the run's own hypothesis files.
- finetune: the first steps of one domain fine-tune (the finetune_domain job's settings from the run's config),
  profiled by part (features, forward, backward, optimizer).
- startup: the CPU time of a fresh interpreter importing what each kind of job imports before its first line of
  work, and of a job forked from a local run's job server (asrmerge.workflow.job_server: its own process, which
  asks the server, plus the fork's, for a job that does nothing), each the median of three.
- run: a finished run's job times by stage from its per-job benchmark files (benchmarks/world_targets.py), CPU
  minutes beside wall minutes, and its span (first job's start to last job's end); with --make-log, the wall clock
  and CPU time that `/usr/bin/time -v make demo` (or --target whisper-base) wrote for the whole command (its set-up
  included).
- tests: the test command of `make test` (or --target test-fast; read from the Makefile) run from this checkout, its
  wall clock, CPU time, outcome and slowest parts (--name keeps records of other commands apart; extra pytest
  arguments follow `--`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from asrmerge import layout
from asrmerge.layout import MODEL_WEIGHTS
from asrmerge.report.results_page import whole_command

OUT = Path(".bench/stage-speed")
PAGE = Path("docs/measured/speed.md")
TARGET_CORES = 2  # the machine of the demo's time target: `make demo` in 12 min on 2 quiet cores
#: `make whisper-base` (real Whisper base on the whole demo world) in an hour on 2 cores; `make demo`'s target is
#: world_targets.DEMO_SECONDS (W8 of the demo world).
RUN_TARGET_SECONDS = {"whisper-base": 60 * 60}
TEST_TARGET_SECONDS = {"test": 600, "test-fast": 120}  # `make test` in 10 min on 2 cores, its fast tier in 2
MAKEFILE = Path("Makefile")
DECODE_JOBS = "decode (decode_model, decode_merged, select_lambda)"
FINETUNE_JOBS = "fine-tune (finetune_domain, finetune_joint)"
#: What each kind of job imports before it works (its script's imports and the stage function's own).
JOB_IMPORTS = {
    "torch alone": "torch",
    "torch and transformers' Whisper": "transformers.models.whisper.modeling_whisper",
    DECODE_JOBS: "asrmerge.workflow.jobs asrmerge.workflow.stages asrmerge.evaluation.decoding "
    "asrmerge.evaluation.selection",
    FINETUNE_JOBS: "asrmerge.workflow.jobs asrmerge.workflow.stages asrmerge.training.loop",
    "score": "asrmerge.workflow.jobs asrmerge.workflow.stages asrmerge.evaluation.scoring",
    "merge": "asrmerge.workflow.jobs asrmerge.merging.engine",
}
#: The stages of a run's job records (world_targets.job_seconds) whose jobs are of each kind of JOB_IMPORTS.
JOB_STAGES = {
    DECODE_JOBS: ("hypotheses/", "selection"),
    FINETUNE_JOBS: ("models/finetuned", "models/joint"),
    "score": ("scores",),
    "merge": ("merges",),
}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def save(name: str, record: Mapping) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


# ---------------------------------------------------------------------------------------------------------- decode

def transformers_greedy(whisper, features, prompt, max_new_tokens):
    """The earlier greedy search: transformers' decoder with its cache for every token, every row until all rows
    have ended (kept here as the reference the current asrmerge.evaluation.decoding.greedy_decode must equal)."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    from asrmerge.models.whisper import first_step_suppressed_ids, suppressed_token_ids

    model, eot = whisper.model, whisper.eot_id
    batch, device = features.shape[0], features.device
    with torch.inference_mode():
        encoder_states = model.model.encoder(features).last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        step_input = torch.tensor([list(prompt)] * batch, device=device)
        suppress = torch.tensor(suppressed_token_ids(whisper), dtype=torch.long)
        suppress_first = torch.tensor(first_step_suppressed_ids(whisper), dtype=torch.long)
        limit = min(max_new_tokens, model.config.max_target_positions - len(prompt))
        tokens = torch.full((batch, max(limit, 0)), eot, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool)
        for step in range(limit):
            hidden = model.model.decoder(input_ids=step_input, encoder_hidden_states=encoder_states, cache=cache,
                                         use_cache=True).last_hidden_state
            logits = model.proj_out(hidden[:, -1]).float()
            logits[:, suppress] = -torch.inf
            if step == 0:
                logits[:, suppress_first] = -torch.inf
            next_token = logits.argmax(dim=-1).masked_fill(finished, eot)
            tokens[:, step] = next_token
            finished |= next_token == eot
            if bool(finished.all()):
                break
            step_input = next_token[:, None]
    rows = []
    for row in tokens.tolist():
        rows.append(row[: row.index(eot)] if eot in row else row)
    return rows


class Stopwatch:
    """CPU seconds of this thread spent in named calls: module forwards (hooks) and module-level functions
    (wrapped in place). CPU time, not wall time, so that other work on the machine slows nothing it reports."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def _add(self, part: str, since: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + time.thread_time() - since

    def module(self, part: str, module) -> None:
        starts = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.thread_time()))
        module.register_forward_hook(lambda *_: self._add(part, starts.pop()))

    def function(self, part: str, namespace, name: str) -> None:
        """Time calls of `namespace[name]` (a module's attribute or a dict's entry) made through that name."""
        get = namespace.__getitem__ if isinstance(namespace, dict) else lambda key: getattr(namespace, key)
        put = namespace.__setitem__ if isinstance(namespace, dict) else lambda key, value: setattr(namespace, key, value)
        inner = get(name)

        def timed(*args, **kwargs):
            since = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self._add(part, since)

        put(name, timed)

    def take(self) -> dict[str, float]:
        taken, self.seconds = {part: round(seconds, 2) for part, seconds in self.seconds.items()}, {}
        return taken


def measured(fn: Callable, *args, **kwargs):
    """fn's result, its wall seconds and its process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)


def decode(args) -> None:
    import torch

    import asrmerge.evaluation.decoding as decoding
    from asrmerge.data.manifest import read_manifest
    from asrmerge.models.whisper import load_whisper

    torch.set_num_threads(1)  # as the demo's jobs (profiles/default set-threads)
    results = Path(args.results)
    config = _config(results)
    hypotheses = Path(layout.path(results, layout.HYPOTHESES_DIR, system=args.model))
    sets = sorted(p.stem for p in hypotheses.glob("*.jsonl"))
    if not sets:
        raise SystemExit(f"{hypotheses}: no hypothesis files (give --results and --model of a finished run)")
    folder = Path(layout.path(results, layout.MODEL, model=args.model))
    whisper = load_whisper(folder)
    options = decoding.DecodingOptions(**config["evaluation"])
    manifests = {name: read_manifest(layout.path(results, layout.MANIFEST, set=name), split="test") for name in sets}
    everything = [u for utterances in manifests.values() for u in utterances]
    cpu = torch.device("cpu")
    decoding.transcribe(whisper, everything[:8], options, cpu, progress=False)  # warm: audio in the page cache
    watch = Stopwatch()
    watch.module("encoder", whisper.model.model.encoder)
    watch.module("transformers' decoder calls", whisper.model.model.decoder)
    watch.function("decoder steps after the prompt (asrmerge's)", decoding, "_decoder_step")
    watch.function("log-mel features", decoding, "log_mel")
    watch.function("voice-activity detection (long-form sets)", decoding.LONG_FORM_PIECES, "vad")

    def earlier():
        decoding.greedy_decode, current = transformers_greedy, decoding.greedy_decode
        try:
            return [row for utterances in manifests.values()
                    for row in decoding.transcribe(whisper, utterances, options, cpu, progress=False)]
        finally:
            decoding.greedy_decode = current

    before_rows, before_wall, before_cpu = measured(earlier)
    before_parts = watch.take()
    after_rows, after_wall, after_cpu = measured(decoding.transcribe, whisper, everything, options, cpu, progress=False)
    after_parts = watch.take()
    recorded = [json.loads(line) for name in sets for line in (hypotheses / f"{name}.jsonl").open(encoding="utf-8")]
    n = len(everything)
    record = {"command": shlex.join(["benchmarks/stage_speed.py", *sys.argv[1:]]), "machine": machine(),
              "model": str(folder), "test_sets": len(sets), "utterances": n, "options": config["evaluation"],
              "threads": 1,
              "before": {"path": "transformers' decoder for every token, each test set on its own",
                         "wall_seconds": before_wall, "cpu_seconds": before_cpu,
                         "utterances_per_cpu_second": round(n / before_cpu, 2), "parts": before_parts},
              "after": {"path": "asrmerge's decoder step, finished rows leave the batch, all test sets in one call",
                        "wall_seconds": after_wall, "cpu_seconds": after_cpu,
                        "utterances_per_cpu_second": round(n / after_cpu, 2), "parts": after_parts},
              "identical_rows_after_vs_before": sum(a == b for a, b in zip(after_rows, before_rows)),
              "identical_transcripts_vs_run": sum(a["hypothesis"] == r["hypothesis"] and a["flags"] == r.get("flags", [])
                                                  for a, r in zip(after_rows, recorded))}
    save(f"decode-{args.model.replace('/', '-')}", record)
    print(json.dumps(record, indent=1))


def _config(results: Path) -> dict:
    """The run's config: the workflow keeps the config it ran with in its results folder, else config.yaml."""
    import yaml

    for candidate in (results / "config.yaml", Path("config.yaml")):
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text(encoding="utf-8"))
    raise SystemExit("no config found")


# -------------------------------------------------------------------------------------------------------- finetune

def finetune(args) -> None:
    import torch

    import asrmerge.training.loop as loop
    from asrmerge.models.whisper import LoadedWhisper, load_whisper
    from asrmerge.workflow.jobs import utterances

    torch.set_num_threads(1)
    results = Path(args.results)
    config = _config(results)
    settings = {**config["finetune"]["domain"], "steps": args.steps}
    manifest = layout.path(results, layout.MANIFEST, set=args.domain)
    replay = layout.path(results, layout.MANIFEST, set="general")
    whisper = load_whisper(layout.path(results, layout.BASE_MODEL))
    watch = Stopwatch()
    watch.function("log-mel features (computed once per utterance, then cached)", loop.FeatureCache, "__call__")
    watch.module("encoder forward (within the forward)", whisper.model.model.encoder)
    watch.function("forward: encoder, decoder, loss (features included)", loop, "batch_loss")
    watch.function("backward", torch.Tensor, "backward")
    watch.function("optimizer step (AdamW)", torch.optim.AdamW, "step")
    watch.function("resume fingerprint (hashes the inputs once)", loop, "training_fingerprint")
    watch.function("saving the model", LoadedWhisper, "save")
    with tempfile.TemporaryDirectory() as tmp:
        curve, wall, cpu = measured(loop.train, whisper, utterances([manifest], "train"),
                                    loop.TrainingOptions(**settings, seed=config["seed"]), Path(tmp) / "model",
                                    torch.device("cpu"), replay_set=utterances([replay], "train"))
        weights = hashlib.sha256((Path(tmp) / "model" / MODEL_WEIGHTS).read_bytes()).hexdigest()
        parts = watch.take()  # the timed run's alone: the profiled run below calls the same functions
        operators = operator_profile(lambda: loop.train(
            load_whisper(layout.path(results, layout.BASE_MODEL)), utterances([manifest], "train"),
            loop.TrainingOptions(**{**settings, "steps": PROFILED_STEPS}, seed=config["seed"]), Path(tmp) / "profiled",
            torch.device("cpu"), replay_set=utterances([replay], "train")))
    record = {"command": shlex.join(["benchmarks/stage_speed.py", *sys.argv[1:]]), "machine": machine(),
              "domain": args.domain, "settings": settings, "threads": 1, "steps": args.steps,
              "wall_seconds": wall, "cpu_seconds": cpu, "cpu_seconds_per_step": round(cpu / args.steps, 3),
              "parts": parts, "final_loss": curve[-1]["loss"], "weights_sha256": weights,
              "operators": operators, "large_matrix_product_gflops": large_product_gflops()}
    save("finetune", record)
    print(json.dumps(record, indent=1))


#: Steps of a second, shorter fine-tune run under torch's profiler (its overhead stays out of the timed run).
PROFILED_STEPS = 3
#: torch operators by what they compute, forward and backward; the rest is "other".
OPERATOR_CLASSES = {
    "matrix products (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (scaled dot product)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                       "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "copies": ("aten::copy_",),
}
MATRIX_PRODUCTS = "matrix products (mm, addmm, bmm)"
NEAR_PEAK = 0.8  # a step's products at this share of a large product's rate run as fast as the core allows


def operator_profile(run: Callable[[], object]) -> dict:
    """Self CPU seconds of `run` by operator class (torch.profiler), and the rate of its matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        run()
    seconds = dict.fromkeys([*OPERATOR_CLASSES, "other"], 0.0)
    flops = 0.0
    for event in profiler.key_averages():
        kind = next((name for name, ops in OPERATOR_CLASSES.items() if event.key in ops), "other")
        seconds[kind] += event.self_cpu_time_total / 1e6
        flops += event.flops if kind == MATRIX_PRODUCTS else 0.0
    return {"steps": PROFILED_STEPS, "self_cpu_seconds": {kind: round(value, 2) for kind, value in seconds.items()},
            "matrix_product_gflops": round(flops / seconds[MATRIX_PRODUCTS] / 1e9, 1)}


def large_product_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one thread (as in every demo job) on a large float32 matrix product: what this core's matrix
    arithmetic reaches."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(size, size, generator=torch.Generator().manual_seed(0)), torch.randn(size, size)
        torch.mm(a, b)  # the library's first call sets itself up
        start = time.process_time()
        for _ in range(repeats):
            torch.mm(a, b)
        return round(2 * size**3 * repeats / (time.process_time() - start) / 1e9, 1)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------- startup

def child_cpu_seconds(command: Sequence[str], env: Mapping[str, str] | None = None) -> float:
    """User + system CPU seconds of one child process (not its wall time: other work on the machine stretches that)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


#: A job that does nothing but what scripts/stage.py does first: ask the run's job server to run it.
EMPTY_JOB = """import sys
from asrmerge.workflow.job_server import run_on_server

class Job:
    log = [sys.argv[1]]

run_on_server(Job())
"""


def forked_job_cpu_seconds() -> float:
    """CPU seconds of one empty job run on a job server (its own process plus the fork), as a run's jobs are (median
    of three, after one that waits for the server's imports)."""
    from asrmerge.workflow import job_server

    server = job_server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script, log = Path(tmp) / "job.py", Path(tmp) / "job.log"
            script.write_text(EMPTY_JOB)
            env = job_server.job_environment(os.environ)
            seconds = [_forked_job_seconds(script, log, env) for _ in range(4)][1:]
    finally:
        notes = job_server.stop(server)
    if None in seconds:
        raise SystemExit(f"the empty job did not run on the job server: {notes}")
    return statistics.median(seconds)


def _forked_job_seconds(script: Path, log: Path, env: Mapping[str, str]) -> float | None:
    """The empty job's CPU seconds, its own process's and its fork's (None when it did not run on the server)."""
    from asrmerge.workflow import job_server

    log.write_text("")
    own = child_cpu_seconds([sys.executable, str(script), str(log)], env)
    usage = job_server.read_usage(log)
    return None if usage is None else own + usage.cpu_seconds


def startup(args) -> None:
    rows = {}
    for job, modules in JOB_IMPORTS.items():
        code = "; ".join(f"import {m}" for m in modules.split())
        seconds = statistics.median(child_cpu_seconds([sys.executable, "-c", code]) for _ in range(3))
        rows[job] = {"imports": modules, "cpu_seconds": round(seconds, 2)}
    bare = statistics.median(child_cpu_seconds([sys.executable, "-c", "pass"]) for _ in range(3))
    record = {"command": shlex.join(["benchmarks/stage_speed.py", *sys.argv[1:]]), "machine": machine(),
              "bare_interpreter_cpu_seconds": round(bare, 2), "jobs": rows,
              "forked_job_cpu_seconds": round(forked_job_cpu_seconds(), 2)}
    save("startup", record)
    print(json.dumps(record, indent=1))


# ------------------------------------------------------------------------------------------------------------- run

def run(args) -> None:
    """A finished run's job times by stage (world_targets.job_seconds), CPU minutes beside wall minutes, its span,
    and the whole command's time from `/usr/bin/time -v`'s report (--make-log)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from world_targets import DEMO_SECONDS, job_seconds

    from asrmerge.report.results_page import first_start, make_targets, read_jobs, span_seconds, time_report

    stages = job_seconds(Path(args.results))
    if not stages:
        raise SystemExit(f"{args.results}: no job benchmark files")
    target_seconds = {"demo": DEMO_SECONDS, **RUN_TARGET_SECONDS}[args.target]
    jobs = read_jobs(Path(args.results))
    make = time_report(Path(args.make_log)) if args.make_log else None
    if make and make_targets(make) != [args.target]:
        raise SystemExit(f"{args.make_log} timed `{make['command']}`, not `make {args.target}` (--target)")
    record = {"command": shlex.join(["benchmarks/stage_speed.py", *sys.argv[1:]]), "machine": machine(),
              "commit": _commit(), "results": args.results, "make_target": args.target, "target_seconds": target_seconds,
              "conditions": args.conditions, "span_seconds": round(span_seconds(jobs), 1),
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(first_start(jobs))),
              "forked_jobs": sum(job.forked for job in jobs),
              "make": make,
              "stages": {stage: {"jobs": jobs, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
                         for stage, (jobs, wall, cpu) in stages.items()}}
    save(args.name, record)
    print(json.dumps(record, indent=1))


# ----------------------------------------------------------------------------------------------------------- tests

#: pytest reports its slowest setups, calls and teardowns (it changes nothing else): the suite's record says where
#: its time went.
SLOWEST = 8
_DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)$")


def tests(args) -> None:
    """The test suite as `make test` runs it, from this checkout: wall clock, CPU time (the suite and every process
    it starts), its summary line and its slowest parts."""
    command = [*make_test_command(args.target), f"--durations={SLOWEST}", *args.pytest_args]
    at_start = machine()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = next((line.strip("= ") for line in reversed(done.stdout.splitlines()) if " in " in line), "")
    record = {"command": shlex.join(["benchmarks/stage_speed.py", *sys.argv[1:]]), "machine": at_start,
              "machine_at_start": True, "make_target": args.target, "test_command": shlex.join(["python", *command]),
              "commit": _commit(), "exit_status": done.returncode,
              "summary": summary, "wall_seconds": round(wall, 1),
              "slowest": [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
                          for m in map(_DURATION.match, done.stdout.splitlines()) if m],
              "cpu_seconds": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1)}
    save(args.name, record)
    print(json.dumps(record, indent=1))


def make_test_command(target: str) -> list[str]:
    """The Python arguments of a make target's recipe in the Makefile ("-m pytest -q ...")."""
    lines = MAKEFILE.read_text(encoding="utf-8").splitlines()
    recipe = shlex.split(lines[lines.index(f"{target}: venv") + 1])
    return recipe[recipe.index("$(BIN)/python") + 1:]


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


# ------------------------------------------------------------------------------------------------------------ page

def page(args) -> None:
    records = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(OUT.glob("*.json"))}
    if not records:
        raise SystemExit(f"no result files in {OUT}: run the decode, finetune and startup measurements first")
    lines = ["# Speed of the demo's stages", "",
             f"Written by `.venv/bin/python benchmarks/stage_speed.py page` from the result files in `{OUT}/`, which "
             "the commands named in each section wrote. Times are CPU seconds of the measuring process (one thread, "
             "as every demo job runs): the machine is shared, and CPU time is what other work does not stretch; "
             "wall seconds are given beside them, with the load at the start (2 cores: a load above 2 means other "
             "work ran beside the measurement). A comparison's two paths ran in one process, one after the other. "
             "Per-stage job times of a whole run: `benchmarks/world_targets.py results/demo`.", ""]
    lines += _targets(records)
    for name, record in records.items():
        lines += SECTIONS[name.split("-")[0]](record)
    lines += _before_after(records) + _startup_share(records)
    PAGE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {PAGE}")


def _targets(records: Mapping[str, Mapping]) -> list[str]:
    """The speed targets of the demo's stages, met or missed, from the records."""
    lines = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for decode in (record for name, record in records.items() if name.startswith("decode")):
        speedup = decode["before"]["cpu_seconds"] / decode["after"]["cpu_seconds"]
        bound = decode["before"]["cpu_seconds"] / decode["after"]["parts"]["encoder"]
        same = decode["identical_rows_after_vs_before"] == decode["utterances"]
        lines.append(f"| decoding a demo model (`{decode['model']}`) ≥ 5× the utterances per second, identical "
                     "transcripts | "
                     f"{speedup:.2f}×, {decode['identical_rows_after_vs_before']}/{decode['utterances']} identical | "
                     f"{'missed' if speedup < 5 else 'met'}{'' if same else ', transcripts differ'}: the encoder "
                     f"bounds it at {bound:.1f}× |")
    tune = records.get("finetune")
    if tune:
        why = "the step is the encoder's arithmetic"
        if tune.get("operators"):
            rate = tune["operators"]["matrix_product_gflops"] / tune["large_matrix_product_gflops"]
            why += f", its matrix products at {100 * rate:.0f} % of the rate of one large product on this core"
        lines.append(f"| a fine-tune step ≥ 3× faster at identical weights | {tune['cpu_seconds_per_step']} CPU s "
                     f"per step, unchanged | missed: {why} (below) |")
    tests = sorted((record for name, record in records.items() if name.startswith("tests")),
                   key=lambda record: record["machine"]["date"], reverse=True)  # the latest first
    runs = [record for name, record in records.items() if name.startswith("run")]
    lines += [row for record in runs for row in _run_target(record)]
    lines += [row for record in tests for row in _test_target(record)] + [""] + _demo_floor(records) + [

              "What changed, each with its identity check: a local run forks its jobs from a job server that has "
              "imported torch, transformers' Whisper and the stages once, so no job pays for those imports "
              "(`asrmerge.workflow.job_server`; tests/test_job_server.py runs the micro config with and without it "
              "and compares every file); Snakemake's scheduler keeps one pending wake-up instead of adding one per "
              "finished job, which had its loop pass ever more often and kept the run's own process busy "
              "(`asrmerge.workflow.scheduler_wakeups`); greedy and beam search run the decoder's operations "
              "directly after the prompt (transformers' per-call machinery cost more than a small model's arithmetic), "
              "finished greedy rows leave the batch, and a decode job fills its batches across all its test sets "
              "(`asrmerge.evaluation.decoding`; tests/test_decoding.py compares against transformers' decoder and "
              "`generate`, the rows below against the earlier path and the run's files); a CTC head fitted on a frozen "
              "encoder encodes each utterance once (bit-identical head, tests/test_training.py); `make demo` uses all "
              "the machine's cores by default with one thread per job (profiles/default), so more cores run more jobs "
              "side by side and no result depends on the core count; `make test` runs its modules side by side, one "
              "worker per core, with each workflow run made once (tests/conftest.py groups the tests that share one, "
              "tests/test_xdist_groups.py checks that pytest-xdist keeps the groups), and the SLURM test makes its "
              "run beside the session's micro run, its reference, since it mostly waits for SLURM's status checks. "
              "No test was cut or narrowed for it. Of the jobs ready at once, those of the rule on the longest "
              "chain to the final target start first (each rule's `priority:`, derived from the rule graph by "
              "tests/test_rules.py), so the merges' selections and decodes no longer trail at the end of a run; "
              "the environment's install compiles its modules to bytecode with a worker per core instead of "
              "pip's one after the other (Makefile). Neither changes a job's work.", ""]
    return lines


def _run_target(run: Mapping) -> list[str]:
    target, span, make_target = run["target_seconds"], run["span_seconds"], run["make_target"]
    make = run.get("make")
    whole = whole_command(make)
    cpu = sum(stage["cpu_seconds"] for stage in run["stages"].values())
    measured = make["wall_seconds"] if make else span  # the whole command when it was timed: what a user waits
    why = (f"its jobs take {cpu / 60:.1f} CPU min, at least {cpu / 60 / TARGET_CORES:.1f} min on {TARGET_CORES} "
           "cores (below)")
    if span <= target < measured:
        why = (f"its jobs took {span / 60:.1f} min, within it, and the rest of the command "
               f"{(measured - span) / 60:.1f} min: the environment's install (pip) before Snakemake starts, and "
               "Snakemake's own start and end")
    return [f"| `make {make_target}` ≤ {target / 60:.0f} min on {TARGET_CORES} quiet cores | the run's jobs "
            f"{span / 60:.1f} min from the first start to the last end{whole} ({run['conditions']}; "
            f"{_made_at(run)} on {run['machine']['cpu']}, {run.get('forked_jobs', 0)} jobs forked from its job "
            "server) | "
            f"{'met' if measured <= target else 'missed'}: {why} |"]


def _demo_floor(records: Mapping[str, Mapping]) -> list[str]:
    """What the latest demo run's fine-tunes and its decodes' encoder alone take on TARGET_CORES cores: the part of
    its CPU time that no change keeping the weights and transcripts can cut (the fine-tune's and the decode
    benchmarks' profiles say why), against the demo's time target."""
    demos, decodes = _demo_runs(records), [record for name, record in records.items() if name.startswith("decode")]
    if not demos or not decodes:
        return []
    run = demos[-1]

    def cpu_of(kind: str) -> float:
        return sum(stage["cpu_seconds"] for name, stage in run["stages"].items() if name.startswith(JOB_STAGES[kind]))

    tunes, decoding = cpu_of(FINETUNE_JOBS), cpu_of(DECODE_JOBS)
    share = min(record["after"]["parts"]["encoder"] / record["after"]["cpu_seconds"] for record in decodes)
    floor = (tunes + share * decoding) / TARGET_CORES
    rest = run["make"]["wall_seconds"] - run["span_seconds"] if run.get("make") else 0.0
    return [f"What bounds `make demo` here ({_made_at(run)} on {run['machine']['cpu']}): its fine-tunes take "
            f"{tunes / 60:.1f} CPU min of arithmetic (section \"Fine-tuning\") and its decodes and λ selection "
            f"{decoding / 60:.1f} CPU min, of which the encoder is at least {100 * share:.0f} % (section \"Decoding "
            f"one model\"). These two alone take {floor / 60:.1f} min on {TARGET_CORES} cores; with the rest of the "
            f"command (the environment's install, Snakemake's start and end: {rest / 60:.1f} min in that run), "
            f"{(floor + rest) / 60:.1f} min against the target of {run['target_seconds'] / 60:.0f}, were every other "
            "part of every job free.", ""]


def _test_target(tests: Mapping) -> list[str]:
    target = tests.get("make_target", "test")
    limit = TEST_TARGET_SECONDS[target]
    wall = tests["wall_seconds"]
    return [f"| `make {target}` ≤ {limit / 60:.0f} min on {TARGET_CORES} cores | "
            f"{wall / 60:.1f} min "
            f"(`{tests['test_command']}` at {tests['commit']}, {_when(tests)}: {tests['summary']}; "
            f"{tests['cpu_seconds'] / 60:.1f} CPU min) | "
            f"{'met' if wall <= limit and tests['exit_status'] == 0 else 'missed'} |"]


def _when(tests: Mapping) -> str:
    """Date and load of a tests record: taken at the start, or (records without `machine_at_start`) at the end."""
    moment = "start" if tests.get("machine_at_start") else "end"
    return (f"{tests['machine']['date']} and load {tests['machine']['load_average_1min_at_start']} at the suite's "
            f"{moment}")


def _tests_section(record: Mapping) -> list[str]:
    """The slowest parts of a test-suite record (pytest's durations; a module fixture counts in the setup of the
    first test that asks for it)."""
    if not record.get("slowest"):
        return []
    lines = [f"## The test suite's slowest parts at {record['commit']}", "",
             f"`{record['test_command']}`, {_when(record)}; pytest's durations, a fixture in the setup of the first "
             "test that uses it:", "", "| seconds | phase | test |", "|---|---|---|"]
    lines += [f"| {row['seconds']:.0f} | {row['phase']} | `{row['test']}` |" for row in record["slowest"]]
    total = sum(row["seconds"] for row in record["slowest"])
    return lines + ["", f"These {len(record['slowest'])} take {total / 60:.1f} of the suite's "
                        f"{record['wall_seconds'] / 60:.1f} min.", ""]


def _header(title: str, record: Mapping) -> list[str]:
    m = record["machine"]
    return [f"## {title}", "", f"`.venv/bin/python {record['command']}`, {m['date']}, {m['cores']} cores "
            f"({m['cpu']}), load {m['load_average_1min_at_start']} at the start, {record.get('threads', 1)} thread:", ""]


def _decode_section(record: Mapping) -> list[str]:
    before, after = record["before"], record["after"]
    lines = _header(f"Decoding one model: `{record['model']}`, {record['test_sets']} test sets, "
                    f"{record['utterances']} utterances", record)
    lines += ["| path | CPU s | wall s | utt per CPU s |", "|---|---|---|---|",
              f"| before: {before['path']} | {before['cpu_seconds']} | {before['wall_seconds']} | "
              f"{before['utterances_per_cpu_second']} |",
              f"| after: {after['path']} | {after['cpu_seconds']} | {after['wall_seconds']} | "
              f"{after['utterances_per_cpu_second']} |", "",
              f"Speed-up {before['cpu_seconds'] / after['cpu_seconds']:.2f}× in CPU time (both measured in this run, "
              f"one after the other). Identical rows (id, transcript, flags) after vs before: "
              f"{record['identical_rows_after_vs_before']} of {record['utterances']}; transcripts identical to the "
              f"run's own hypothesis files: {record['identical_transcripts_vs_run']} of {record['utterances']}.", "",
              "Where the CPU time goes (seconds):", "", "| part | before | after |", "|---|---|---|"]
    for part in sorted(set(before["parts"]) | set(after["parts"])):
        lines.append(f"| {part} | {before['parts'].get(part, 0)} | {after['parts'].get(part, 0)} |")
    encoder = after["parts"]["encoder"]
    lines += ["", f"Bound: the encoder alone takes {encoder} s of the {after['cpu_seconds']} s "
              f"({100 * encoder / after['cpu_seconds']:.0f} %). It runs once per utterance on the whole padded window "
              "(the model was trained on padded windows; a shorter input changes its transcripts), and a faster "
              "encoder would need other arithmetic (lower precision, fused kernels), which changes its numbers, so "
              "with identical transcripts no decoder can be faster than "
              f"{before['cpu_seconds'] / encoder:.1f}× the earlier path here.", ""]
    return lines


def _finetune_section(record: Mapping) -> list[str]:
    lines = _header(f"Fine-tuning: the first {record['steps']} steps of the `{record['domain']}` fine-tune", record)
    lines += [f"{record['cpu_seconds_per_step']} CPU s per step ({record['cpu_seconds']} CPU s in all, batch "
              f"{record['settings']['batch_size']}, replay fraction {record['settings']['replay_fraction']}); "
              f"weights sha256 `{record['weights_sha256'][:16]}`.", "",
              "| part | CPU s |", "|---|---|"]
    lines += [f"| {part} | {seconds} |" for part, seconds in record["parts"].items()]
    parts = record["parts"]
    compute = parts["forward: encoder, decoder, loss (features included)"] + parts["backward"]
    lines += ["", f"Bound: forward and backward take {compute:.1f} s of {record['cpu_seconds']} CPU s "
              f"({100 * compute / record['cpu_seconds']:.0f} %); the encoder alone is "
              f"{parts['encoder forward (within the forward)']} s of the forward's "
              f"{parts['forward: encoder, decoder, loss (features included)']} s (the 6 s windows are padded, 300 "
              "positions each). Features are already computed once per utterance (FeatureCache) and the optimizer is "
              "small, so what is left is arithmetic: a faster step would need less of it (shorter windows, lower "
              "precision), which changes the weights. The fine-tune's speed-up target is missed for that reason.", ""]
    operators = record.get("operators")
    if operators:
        total = sum(operators["self_cpu_seconds"].values())
        lines += [f"Where a step's time goes by operator: {operators['steps']} more steps under torch's profiler "
                  "(self CPU time of each operator, forward and backward; the profiler adds its own cost to every "
                  "call, most to the small ones):", "", "| operators | CPU s | share |", "|---|---|---|"]
        lines += [f"| {kind} | {value} | {100 * value / total:.0f} % |"
                  for kind, value in operators["self_cpu_seconds"].items()]
        rate, large = operators["matrix_product_gflops"], record["large_matrix_product_gflops"]
        verdict = ("as fast as this core multiplies float32 matrices at all" if rate >= NEAR_PEAK * large else
                   "slower than a large product, as narrow products are: moving their operands costs about as much "
                   "as their arithmetic")
        lines += ["", f"The step's matrix products run at {rate} GFLOP/s, {100 * rate / large:.0f} % of the {large} "
                  "GFLOP/s that one large float32 product (2048 × 2048) reaches on the same core and thread: "
                  f"{verdict}. The library picks its kernel and the order of the sums by the shapes, so another way "
                  "of computing them gives other sums, and other weights.", ""]
    return lines


def _startup_section(record: Mapping) -> list[str]:
    lines = _header("Job start-up: a fresh interpreter importing what each kind of job imports", record)
    lines += ["| job | CPU s |", "|---|---|", f"| bare interpreter | {record['bare_interpreter_cpu_seconds']} |"]
    lines += [f"| {job} | {row['cpu_seconds']} |" for job, row in record["jobs"].items()]
    if "forked_job_cpu_seconds" in record:
        lines += [f"| any job forked from the run's job server (its own process and the fork) | "
                  f"{record['forked_job_cpu_seconds']} |"]
    lines += ["", "Importing torch and transformers' Whisper is most of a model job's start-up; every job that runs a "
              "model needs both, and both import much of themselves eagerly (torch.distributed, torch._dynamo and "
              "with them sympy and scipy.signal, by `python -X importtime`). A local run imports them once: its "
              "job server (asrmerge.workflow.job_server) imports them and forks each job from itself, so a job "
              "starts with them imported.", ""]
    return lines


def _run_section(record: Mapping) -> list[str]:
    stages = record["stages"]
    cpu = sum(stage["cpu_seconds"] for stage in stages.values())
    wall = sum(stage["wall_seconds"] for stage in stages.values())
    tunes = sum(stage["cpu_seconds"] for name, stage in stages.items() if name.startswith("models/"))
    cores = TARGET_CORES
    jobs = sum(stage["jobs"] for stage in stages.values())
    lines = [f"## The whole run `{record['results']}`, {_made_at(record)}: job time by stage", "",
             f"`.venv/bin/python {record['command']}` (from the run's per-job Snakemake benchmark files; the run: "
             f"{record['conditions']}; {record['machine']['cores']} cores ({record['machine']['cpu']}); "
             f"{record.get('forked_jobs', 0)} of its {jobs} jobs forked from its job server):", "", "| stage | jobs | wall min | CPU min |", "|---|---|---|---|"]
    lines += [f"| {name} | {stage['jobs']} | {stage['wall_seconds'] / 60:.1f} | {stage['cpu_seconds'] / 60:.1f} |"
              for name, stage in stages.items()]
    lines += [f"| all | {jobs} | {wall / 60:.1f} | {cpu / 60:.1f} |", "",
              f"Bound: on {cores} cores the run takes at least its CPU time over {cores}, {cpu / 60 / cores:.1f} min, "
              f"against the target of {record['target_seconds'] / 60:.0f} min, which leaves "
              f"{record['target_seconds'] * cores / 60:.0f} CPU min. Training the models (models/) takes "
              f"{tunes / 60:.1f} of the {cpu / 60:.1f} CPU min, and its arithmetic is what a step is (above). Job "
              "time summed over jobs that ran side by side exceeds the run's span.", ""]
    return lines


def _demo_runs(records: Mapping[str, Mapping]) -> list[Mapping]:
    """The `make demo` run records, the oldest first."""
    return sorted((record for name, record in records.items()
                   if name.startswith("run") and record.get("make_target", "demo") == "demo"),
                  key=_run_date)


def _run_date(record: Mapping) -> str:
    """When a run's first job started (records without it: when the record was taken)."""
    return record.get("started", record["machine"]["date"])


def _made_at(record: Mapping) -> str:
    """When and from which commit a run record's run was made."""
    return f"the run of {_run_date(record)} at {record.get('commit', 'an unrecorded commit')}"


def _before_after(records: Mapping[str, Mapping]) -> list[str]:
    """The job time by stage of the last two `make demo` runs, side by side."""
    demos = _demo_runs(records)
    if len(demos) < 2:
        return []
    before, after = demos[-2:]
    names = list(dict.fromkeys([*after["stages"], *before["stages"]]))
    lines = ["## `make demo` by stage: the last two runs", "",
             f"Before: {_made_at(before)}; after: {_made_at(after)} (both sections above, each with its command "
             f"and conditions, on {before['machine']['cpu']} and {after['machine']['cpu']}). Minutes summed over "
             "each stage's jobs.", "",
             "| stage | before: wall min | CPU min | after: wall min | CPU min |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {_stage_minutes(before, name)} | {_stage_minutes(after, name)} |" for name in names]
    total = {key: [sum(stage[key] for stage in record["stages"].values()) / 60 for record in (before, after)]
             for key in ("wall_seconds", "cpu_seconds")}
    lines += [f"| all jobs | {total['wall_seconds'][0]:.1f} | {total['cpu_seconds'][0]:.1f} | "
              f"{total['wall_seconds'][1]:.1f} | {total['cpu_seconds'][1]:.1f} |",
              f"| first job's start to last job's end | {before['span_seconds'] / 60:.1f} | | "
              f"{after['span_seconds'] / 60:.1f} | |",
              f"| the whole `make demo`, set-up included | {_make_minutes(before)} | {_make_minutes(after)} |", "",
              "A job's CPU minutes are Snakemake's benchmark of its process, which samples the process now and then "
              "and misses some of a job's life; a forked job's are the fork's own count (the kernel's, exact). The "
              "whole command's CPU minutes (`/usr/bin/time -v`, every process included) compare the two runs "
              "exactly.", ""]
    return lines


def _stage_minutes(record: Mapping, name: str) -> str:
    """A stage's wall and CPU minutes in a run record, as two cells."""
    stage = record["stages"].get(name)
    return f"{stage['wall_seconds'] / 60:.1f} | {stage['cpu_seconds'] / 60:.1f}" if stage else "– | –"


def _make_minutes(record: Mapping) -> str:
    """The whole command's wall and CPU minutes (its /usr/bin/time -v report), as two cells."""
    make = record.get("make")
    return f"{make['wall_seconds'] / 60:.1f} | {make['cpu_seconds'] / 60:.1f}" if make else "not timed | "


def _startup_share(records: Mapping[str, Mapping]) -> list[str]:
    """The CPU time the run without the job server spent importing, for the kinds of job whose start-up was measured:
    jobs × start-up; and what a forked job costs instead."""
    demos = _demo_runs(records)
    before = next((record for record in reversed(demos) if not record.get("forked_jobs")), None)
    after = next((record for record in reversed(demos) if record.get("forked_jobs")), None)
    startup = records.get("startup")
    if before is None or startup is None:
        return []
    rows, total = [], 0.0
    for kind, prefixes in JOB_STAGES.items():
        jobs = sum(stage["jobs"] for name, stage in before["stages"].items() if name.startswith(prefixes))
        seconds = jobs * startup["jobs"][kind]["cpu_seconds"]
        total += seconds
        rows.append(f"| {kind} | {jobs} | {startup['jobs'][kind]['cpu_seconds']} | {seconds / 60:.1f} |")
    cpu = sum(stage["cpu_seconds"] for stage in before["stages"].values())
    lines = ["## Start-up in the whole run", "",
             f"The jobs of each kind in the run of {_run_date(before)} (made without the job server) times "
             "that kind's start-up (section \"Job start-up\"): CPU time spent importing before any work.", "",
             "| job | jobs in the run | start-up CPU s | CPU min |", "|---|---|---|---|", *rows, "",
             f"{total / 60:.1f} of that run's {cpu / 60:.1f} CPU min ({100 * total / cpu:.0f} %) for these kinds "
             "alone (statistics, exports, corpus and task-vector jobs started up too): every job was a fresh "
             "interpreter."]
    if after is not None and "forked_job_cpu_seconds" in startup:
        lines[-1] += (f" In the run of {_run_date(after)}, {after['forked_jobs']} jobs were forked from "
                      f"the run's job server, which imported once; a forked job's start-up is "
                      f"{startup['forked_job_cpu_seconds']} CPU s.")
    return lines + [""]


SECTIONS = {"decode": _decode_section, "finetune": _finetune_section, "startup": _startup_section,
            "run": _run_section, "tests": _tests_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("decode")
    one.add_argument("--results", default="results/demo")
    one.add_argument("--model", default="base", help="a model under <results>/models (base, joint, finetuned/<domain>)")
    one.set_defaults(run=decode)
    tune = sub.add_parser("finetune")
    tune.add_argument("--results", default="results/demo")
    tune.add_argument("--domain", default="banking")
    tune.add_argument("--steps", type=int, default=12)
    tune.set_defaults(run=finetune)
    sub.add_parser("startup").set_defaults(run=startup)
    whole = sub.add_parser("run")
    whole.add_argument("--results", default="results/demo")
    whole.add_argument("--conditions", required=True, help="how the run was made: a fresh clone, a quiet machine, ...")
    whole.add_argument("--make-log", default=None, help="the log of `/usr/bin/time -v make TARGET` (its report at the end)")
    whole.add_argument("--target", choices=("demo", *RUN_TARGET_SECONDS), default="demo",
                       help="the make target that made the run, whose time target applies")
    whole.add_argument("--name", default="run", help="the record's name (run, run-...)")
    whole.set_defaults(run=run)
    suite = sub.add_parser("tests")
    suite.add_argument("--name", default="tests", help="the record's name (tests, tests-...)")
    suite.add_argument("--target", choices=sorted(TEST_TARGET_SECONDS), default="test",
                       help="the make target whose test command runs")
    suite.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    suite.set_defaults(run=tests)
    sub.add_parser("page").set_defaults(run=page)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
