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

.PHONY: install test test-all sweep table2 toy-models clean

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

test: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow"

test-all: $(VENV)/.installed
	$(TEST_ENV) $(PY) -m pytest -q

# Sweeps spread their shards over NPROC processes with torchrun: by default one per GPU, or on
# a machine without one, one single-threaded process per CPU core (the toy models are too small
# to keep two threads busy: the default sweep at 512 captions took 137 s on 2 cores, 154 s as
# one 2-thread process, with equal results). NPROC=1: one process, no torchrun.
NPROC ?= auto
RUN := $(if $(filter 1,$(NPROC)),$(VENV)/bin/glide-eval,$(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC) -m glide_eval)

sweep: $(VENV)/.installed
	$(RUN) sweep $(or $(CONFIG),glide_eval/configs/default.toml) --report

table2: $(VENV)/.installed
	$(RUN) sweep glide_eval/configs/table2.toml --report

toy-models: $(VENV)/.installed
	$(PY) -m glide_eval.toy.train --out glide_eval/assets

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
