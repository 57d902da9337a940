# labelloop — the README's two commands are `make demo` and `make test`; both do ALL set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
STATE ?= .labelloop
# uv: the one on PATH, else ~/.local/bin/uv, else a private copy in a bootstrap venv in the state
# dir (works on an "externally managed" system Python, Debian 12 / Ubuntu 24.04, without root)
BOOTSTRAP := $(abspath $(STATE))/bootstrap
UV := $(shell command -v uv 2>/dev/null || { [ -x "$(HOME)/.local/bin/uv" ] && echo "$(HOME)/.local/bin/uv"; } || echo "$(BOOTSTRAP)/bin/uv")
export PATH := $(dir $(UV)):$(PATH)
LS_VENV := $(STATE)/venvs/label-studio
export LABELLOOP_STATE_DIR ?= $(STATE)
export UV_PYTHON ?= 3.11

.PHONY: help setup uv venv human label-studio-venv models browser demo test test-unit test-integration lint bench chaos clean

help:
	@echo "make demo   - set up everything, start the local stack and run the demo"
	@echo "make human  - the demo, pausing so that you label some review tasks in Label Studio"
	@echo "make test   - set up everything and run the whole test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - benchmarks (DATA=../shared/data/dev by default; results in $(STATE)/bench)"
	@echo "make chaos  - kill -9 mid-run and missing servers, then rerun (docs/chaos.md)"

uv:
	@if [ ! -x "$(UV)" ]; then \
	  echo "installing uv into $(BOOTSTRAP) (a private venv; the system Python is not touched)"; \
	  if $(PYTHON) -m venv "$(BOOTSTRAP)" >/dev/null 2>&1 && [ -x "$(BOOTSTRAP)/bin/pip" ]; then \
	    "$(BOOTSTRAP)/bin/pip" install --quiet --disable-pip-version-check uv; \
	  elif $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	    $(PYTHON) -m pip install --quiet --disable-pip-version-check --target "$(BOOTSTRAP)/pkgs" uv \
	      && mkdir -p "$(BOOTSTRAP)/bin" && ln -sf ../pkgs/bin/uv "$(BOOTSTRAP)/bin/uv"; \
	  fi; \
	  [ -x "$(UV)" ] || { echo "could not install uv: install python3-venv (apt-get install python3-venv) or uv itself (https://docs.astral.sh/uv/), then run make again"; exit 1; }; \
	fi

venv: uv
	$(UV) sync --frozen

label-studio-venv: uv
	@if [ ! -x "$(LS_VENV)/bin/label-studio" ]; then \
	  echo "creating the Label Studio venv in $(LS_VENV) (first time only)"; \
	  $(UV) venv --quiet --python 3.11 "$(LS_VENV)" && \
	  VIRTUAL_ENV="$(LS_VENV)" $(UV) pip sync --quiet infra/label-studio.requirements.txt; \
	fi

models: venv
	$(UV) run --frozen labelloop models install

# Chromium for the browser test of the review UI (Debian's package, driven by Playwright; no
# browser download). Best effort: without root or apt the test says it is skipped and why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt, first time only)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "chromium not installed: the review browser test will be skipped"; \
	fi

setup: venv label-studio-venv models browser

demo: setup
	$(UV) run --frozen labelloop demo

human: setup
	$(UV) run --frozen labelloop demo --human

test: setup
	LABELLOOP_LS_VENV="$(abspath $(LS_VENV))" $(UV) run --frozen pytest -q

test-unit: venv
	$(UV) run --frozen pytest -q -m "not integration and not model"

lint: venv
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

DATA ?= ../shared/data/dev
BENCH_OUT ?= $(STATE)/bench
bench: setup
	mkdir -p $(BENCH_OUT)
	$(UV) run --frozen python benchmarks/proposals.py $(DATA) --n-llm 40 --n-llm-alone 15 --out $(BENCH_OUT)/proposals.json
	$(UV) run --frozen python benchmarks/filter_quality.py $(DATA) --json $(BENCH_OUT)/filter_quality.json \
	  --contrast labeling/data/contrast_pairs.jsonl --contrast-unchecked seg-pairs --contrast-balanced seg-pairs
	$(UV) run --frozen python benchmarks/filter_speed.py --data $(DATA) --out $(BENCH_OUT)/filter_speed.json
	$(UV) run --frozen python benchmarks/review_loop.py --data-dir $(DATA) --out $(BENCH_OUT)/review_loop.json
	$(UV) run --frozen python benchmarks/loop_efficiency.py --data $(DATA) --out $(BENCH_OUT)/loop_efficiency
	$(UV) run --frozen python benchmarks/demo_gold.py --n 120 300 800 1200 > $(BENCH_OUT)/demo_gold.md

chaos: venv
	$(UV) run --frozen pytest -q -rP -m integration tests/integration/test_chaos.py

clean:
	-$(UV) run --frozen labelloop stack down
	rm -rf $(STATE)
