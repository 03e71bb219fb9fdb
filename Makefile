# glide-eval: install, test, sweep.
# `make install TORCH=2.13.0` pins torch; everything else installs with that pin as a
# constraint, so pip never replaces it (with a CUDA build or another version).
TORCH ?= 2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := $(VENV)/torch-constraint.txt
SHARED ?= ../shared
# Tests run offline: the GPT-2 BPE files come from ../shared when it is there.
TEST_ENV := HF_HUB_OFFLINE=1 $(if $(wildcard $(SHARED)/tiktoken_cache),TIKTOKEN_CACHE_DIR=$(abspath $(SHARED)/tiktoken_cache))
CONFIG ?=

.PHONY: install lint test test-all sweep table2 toy-models clean

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	@if ! $(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH)' else 1)" 2>/dev/null; then \
		$(PY) -m pip install -q "torch==$(TORCH)"; fi
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(CONSTRAINTS)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	@touch $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(MAKE) install

# ruff (lint + format check) and the import-linter layer contracts (pyproject.toml), then the tests
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: lint
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow"

test-all: lint
	$(TEST_ENV) $(PY) -m pytest -q

# NPROC=N spreads a sweep's shards over N processes with torchrun (one GPU each on CUDA;
# `auto`: one per GPU, or without one, one single-threaded process per CPU core). The default
# sweep (toy models) uses `auto`: its models are too small to keep two threads busy, and at 512
# captions it took 137 s on 2 cores against 154 s as one 2-thread process, with equal results.
# Other configs run one process unless NPROC says otherwise (a process per core, each holding
# the full GLIDE models, could exhaust a CPU machine's memory).
NPROC ?=
run = $(if $(filter 1,$(1)),$(VENV)/bin/glide-eval,$(VENV)/bin/torchrun --standalone --nproc-per-node $(1) -m glide_eval)

sweep: $(VENV)/.installed
	$(call run,$(or $(NPROC),$(if $(CONFIG),1,auto))) sweep $(or $(CONFIG),glide_eval/configs/default.toml) --report

table2: $(VENV)/.installed
	$(call run,$(or $(NPROC),1)) sweep glide_eval/configs/table2.toml --report

toy-models: $(VENV)/.installed
	$(VENV)/bin/glide-eval toy-models --out glide_eval/assets

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .import_linter_cache
