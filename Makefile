# mlsd-lab: every target the README, CI and developers run. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

# Nothing phones home (shared/STACK.md): set for every process a target starts.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export EVIDENTLY_DISABLE_TELEMETRY := 1
export FEAST_USAGE := False
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install test test-fast lint format demo bench clean kind-up kind-down

help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with the locked versions (uv; installed with pip if missing).

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	@bash scripts/system-packages.sh
	@touch $@

test: install ## Run the whole test suite (unit and integration; CI runs this).
	$(BIN)/pytest

test-fast: install ## Run only the fast unit tests.
	$(BIN)/pytest -m "not integration"

lint: install ## ruff (lint and format check) and mypy on the core packages and tests/support.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy mlsd simulator pipeline features models serving monitoring tests/support

format: install ## Apply ruff's fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install ## The main job: run everything built so far, end to end, on embedded defaults.
	$(BIN)/mlsd demo

bench: install ## Record benchmark figures to benchmarks/results/*.json and benchmarks/README.md.
	$(PY) -m benchmarks

clean: ## Reset the lab: delete all state under .mlsd/ (keeps .venv).
	rm -rf .mlsd .pytest_cache .mypy_cache .ruff_cache

kind-up: ## The lab on a kind cluster (needs docker, kind, kubectl; DRY_RUN=1 prints the steps).
	@bash scripts/kind-up.sh

kind-down: ## Delete the lab's kind cluster.
	@bash scripts/kind-down.sh
