# TRACE: `make demo` runs the whole pipeline on the embedded default; `make test` runs the tests.
# Every target creates .venv (CPU torch first, then the project) if it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PRESET ?=
PYTEST_ARGS ?=

export PATH := $(BIN):$(PATH)
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export OMP_NUM_THREADS ?= 2
export PREFECT_HOME ?= $(CURDIR)/.trace/prefect
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.trace/torch_extensions

.PHONY: help install demo test test-fast test-e2e lint ablation prefect-up prefect-down prefect-run mlflow-ui milvus-up milvus-down screenshots use-preset rehearsal gpu-smoke

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
	  || $(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the project (CPU torch)

demo: install ## run all eleven stages on params.yaml (dvc repro) and print the M-BEIR and zero-shot tables
	scripts/demo.sh

test: install ## the test suite CI runs: fast tests, then the end-to-end mini pipeline (slow)
	$(BIN)/pytest -q -m "not gpu and not network and not slow" $(PYTEST_ARGS)
	$(BIN)/pytest -q -m "slow and not gpu and not network" $(PYTEST_ARGS)

test-fast: install ## tests without the slow ones
	$(BIN)/pytest -q -m "not gpu and not network and not slow" $(PYTEST_ARGS)

test-e2e: install ## only the end-to-end pipeline test
	$(BIN)/pytest -q -m slow tests/integration/test_pipeline_e2e.py $(PYTEST_ARGS)

lint: install ## ruff + mypy
	$(BIN)/ruff check trace_core flows tests bench
	$(BIN)/ruff format --check trace_core flows tests bench
	$(BIN)/mypy

rehearsal: install ## full preset's code path at toy size on 2 CPU ranks (ZeRO-3, LoRA, kill + resume, merge, export) -> reports/rehearsal.json
	$(BIN)/python scripts/rehearsal.py -p presets/rehearsal.yaml --out reports/rehearsal.json

gpu-smoke: install ## the rehearsal on CUDA (one rank per GPU, at most 2; skipped without CUDA) -> reports/gpu-smoke.json
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  $(BIN)/python scripts/rehearsal.py -p presets/rehearsal.yaml --device cuda --out reports/gpu-smoke.json; \
	else echo "gpu-smoke: no CUDA device, skipped"; fi

ablation: install ## routing adaptive/never/always + a no-chain control on M-BEIR-mini -> reports/ablation.md
	$(BIN)/python -m flows.ablation

prefect-up: install ## start a Prefect server on 127.0.0.1 and serve the deployments (background)
	scripts/prefect-up.sh

prefect-down: ## stop the Prefect server and the serving process (by recorded PID)
	scripts/prefect-down.sh

prefect-run: ## run the mini deployment on the served Prefect (after make prefect-up) and wait
	source .trace/prefect.env && prefect deployment run 'trace-pipeline/mini' --watch

milvus-up: install ## start a local Milvus server (auth on, token in .trace/milvus.token) on 127.0.0.1:19530 (background)
	scripts/milvus-up.sh

milvus-down: ## stop the local Milvus server (by recorded PID)
	scripts/milvus-down.sh

mlflow-ui: install ## serve the MLflow store on http://127.0.0.1:5000 (foreground)
	scripts/mlflow-ui.sh

screenshots: install ## headless Chromium check of the MLflow compare view, Data Docs index, gallery -> reports/screenshots/
	$(BIN)/python scripts/screenshots.py

use-preset: ## copy presets/$(PRESET).yaml over params.yaml after checking it: make use-preset PRESET=full-qwen2.5-vl-7b
	@test -n "$(PRESET)" || { echo "usage: make use-preset PRESET=<name>; presets: $$(ls presets | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	$(BIN)/python -c "from trace_core.config import load_params; load_params('presets/$(PRESET).yaml')"
	cp presets/$(PRESET).yaml params.yaml
	@echo "params.yaml <- presets/$(PRESET).yaml (git diff params.yaml to review; git checkout params.yaml to go back)"
