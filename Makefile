# One command per stage. `make demo` runs the whole tiny CPU path; `make test` runs the suite.
# RECIPE=tiny uses recipes/tiny-answer.yaml and recipes/tiny-evaluate.yaml; default: the real ones.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ORCH := $(BIN)/orchestrator
STAMP := $(VENV)/.installed

.PHONY: setup test demo help
.DEFAULT_GOAL := help

help:
	@echo "make demo        whole pipeline on the shipped sample with a tiny CPU model"
	@echo "make test        the test suite"
	@echo "make setup       create .venv and install (done by every other target)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q
