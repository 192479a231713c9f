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
# extra pip-compile options for `make lock`, e.g. LOCK_ARGS="--upgrade-package NAME"
LOCK_ARGS ?=
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
	# exactly the locked versions and files (hash-checked), no resolver: torch is the 2.13.0 CPU wheel, never a CUDA build
	$(BIN)/pip install -q --no-deps -r requirements.lock 2>&1 | { grep -v 'is ignored: it is neither' || true; }
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

lock: ## Compile requirements.lock from pyproject.toml (pip-tools, with hashes; keeps locked versions)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --extra dev --allow-unsafe \
	  --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o requirements.lock pyproject.toml
	! grep -qiE '^(nvidia|triton|cuda)' requirements.lock || { echo "CUDA packages in requirements.lock"; exit 1; }
	grep -qE '^torch==[^ ]+\+cpu ' requirements.lock || { echo "torch in requirements.lock is not a +cpu build"; exit 1; }

clean: ## Remove generated data (lake, releases) but keep .venv
	rm -rf lake releases artifacts lightning_logs
