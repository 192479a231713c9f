# GrowthGR: `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= demo
DEMO_ARGS ?=
TEST_WORKERS ?= 4
export GX_ANALYTICS_ENABLED = False
export DBT_SEND_ANONYMOUS_USAGE_STATS = false
export HF_HUB_OFFLINE = 1

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast bench lint lock clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	# exactly the locked versions, no resolver: torch is the 2.13.0 CPU wheel, never a CUDA build
	$(BIN)/pip install -q --no-deps -r requirements.lock apache-airflow==3.3.2 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check | { grep -v 'is ignored: it is neither' || true; }
	touch $(STAMP)

setup: $(STAMP) ## Create .venv from requirements.lock (no-op when up to date)

demo: setup ## Run the main job end to end (PROFILE=demo; DEMO_ARGS="--inject-fault nulls" shows a refused day)
	$(BIN)/python -m growthgr.demo --profile $(PROFILE) $(DEMO_ARGS)

test: setup ## Run the whole test suite (TEST_WORKERS processes, one test module each at a time)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test-fast: setup ## Run the tests not marked slow
	$(BIN)/pytest -q -m "not slow"

bench: setup ## Run the benchmarks in benchmarks/ and print their figures
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: setup ## Lint with ruff
	$(BIN)/ruff check .

lock: ## Re-create requirements.lock from the current .venv (after a verified change)
	$(BIN)/pip freeze --all --exclude-editable | grep -vE '^(-e|pip==)' > requirements.lock

clean: ## Remove generated data (lake, releases) but keep .venv
	rm -rf lake releases artifacts lightning_logs
