# One command per stage; make's own dependency rules skip every stage whose outputs are up
# to date, and every stage resumes, so an interrupted run is finished by typing it again.
# A target or variable with a `## text` comment beside it is listed by `make help`.
#
# RECIPE=tiny uses recipes/tiny-answer.yaml, tiny-evaluate.yaml and tiny-pipeline.yaml (run
# folders runs/tiny-answer, runs/tiny-evaluate); by default the real answer.yaml, evaluate.yaml.
# RECIPE=<file>.yaml names one Answer recipe, e.g. a variant to vote over (dataset.subsample):
# its run folder and training set come from its own name: and dataset.name.
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
PIPELINE ?=        ## the pipeline recipe (default: recipes/<RECIPE>-pipeline.yaml if there, else recipes/pipeline.yaml)
TRAIN ?=           ## your training file (default: data.train of the pipeline recipe)
TEST ?=            ## the file to answer (default: data.test)
GOLD ?=            ## gold answers to score against (default: data.gold)
TEACHER_URL ?=     ## the teacher's OpenAI-compatible base URL (default: teacher.base_url)
TEACHER_MODEL ?=   ## the teacher's model name (default: teacher.model)
TEACHER_KEY_ENV ?= ## the NAME of the variable holding the teacher's key (default: teacher.api_key_env)
LIMIT ?=           ## a trial: infer and eval answer the first N problems, distill asks about the first 10*N
ROLE ?= answer     ## the role of make webui
PORT ?=            ## the port of make webui
# The project remembers its data: each of KEPT given to a make call (command line or
# environment; NAME= for the recipe's own value) is kept in .make/kept.json, and a call that
# omits it takes the kept value and says so (`orchestrator make-vars`). A new PIPELINE drops
# the kept data and teacher.
KEPT := PIPELINE TRAIN TEST GOLD TEACHER_URL TEACHER_MODEL TEACHER_KEY_ENV LIMIT
GIVEN_NAMES := $(foreach v,$(KEPT),$(if $(filter command line environment,$(origin $(v))),$(v)))
# (the text after a value, up to its comment, is part of it: stripped here)
$(foreach v,RECIPE PIPELINE TRAIN TEST GOLD TEACHER_URL TEACHER_MODEL TEACHER_KEY_ENV LIMIT ROLE PORT,\
	$(eval override $(v) := $(strip $($(v)))))

VARIANT_RECIPE := $(filter %.yaml %.yml,$(RECIPE))
PREFIX := $(if $(VARIANT_RECIPE),,$(if $(RECIPE),$(RECIPE)-,))
DEFAULT_PIPELINE := $(or $(wildcard recipes/$(PREFIX)pipeline.yaml),recipes/pipeline.yaml)
ANSWER_RECIPE := recipes/$(PREFIX)answer.yaml
EVALUATE_RECIPE := recipes/$(PREFIX)evaluate.yaml
ANSWER_RUN := runs/$(PREFIX)answer
EVALUATE_RUN := runs/$(PREFIX)evaluate
# What each stage depends on: the recipe in use and the parents it extends (the shipped
# chains: evaluate -> answer, tiny-evaluate -> tiny-answer -> answer).
ANSWER_DEPS := $(sort $(ANSWER_RECIPE) recipes/answer.yaml)
EVALUATE_DEPS := $(sort $(EVALUATE_RECIPE) $(ANSWER_DEPS))

ANSWER_SET := datasets/train_answer_instruct.json
ifneq ($(VARIANT_RECIPE),)
# the variant's run name and dataset name
VARIANT := $(shell $(BIN)/python -c 'from orchestrator.core.recipes.loading import load_role as l; r = l("answer", "$(VARIANT_RECIPE)").recipe; print(r.run_name, r.dataset_name)' 2>/dev/null)
$(if $(VARIANT),,$(error RECIPE=$(VARIANT_RECIPE) is not an Answer recipe that loads; `orchestrator check answer --recipe $(VARIANT_RECIPE)` says why))
ANSWER_RECIPE := $(VARIANT_RECIPE)
ANSWER_RUN := runs/$(word 1,$(VARIANT))
ANSWER_SET := datasets/$(word 2,$(VARIANT)).json
ANSWER_DEPS := $(sort $(VARIANT_RECIPE) $(wildcard recipes/*answer*.yaml))
endif

# The values in force and the files the recipes name with them (data.train, fixes, extra_train,
# test, gold, the pipeline recipe's chain, each role's dataset.extra), from the recipes themselves:
# an edit of any of them re-runs what reads it.
# (not for the targets that read no data: `make demo` says nothing of the kept values it ignores)
ifneq ($(and $(wildcard $(ORCH)),$(filter-out demo help setup setup-quant house-rules test test-fast clean sample bench gpu-check gpu-wheels,$(or $(MAKECMDGOALS),help))),)
MAKE_VARS := $(shell rm -f .make/vars.mk; $(ORCH) make-vars --out .make/vars.mk --pipeline $(DEFAULT_PIPELINE) \
	--answer-recipe $(ANSWER_RECIPE) --evaluate-recipe $(EVALUATE_RECIPE) \
	$(if $(KEPT),,--ignore-kept) $(foreach v,$(GIVEN_NAMES),'$(v)=$($(v))') >&2)
-include .make/vars.mk
endif
# (before the install: the values given, the files they name)
TRAIN_FILES ?= $(wildcard $(TRAIN))
TEST_FILES ?= $(wildcard $(TEST))
GOLD_FILES ?= $(wildcard $(GOLD))
override PIPELINE := $(or $(PIPELINE),$(DEFAULT_PIPELINE))
PIPELINE_DEPS := $(or $(PIPELINE_FILES),$(sort $(wildcard $(PIPELINE)) recipes/pipeline.yaml))
# runs/<prefix>infer for the shipped sample, runs/<prefix>infer-<stem of data.test> for another file
INFER_DIR := runs/$(PREFIX)infer$(INFER_SUFFIX)

# The make variables in force, as the --set items of the commands; ORCHESTRATOR_MAKE_VARIABLES lets
# each command name the variable as the value's origin (`data.train = ... (from TRAIN)`, or
# `(from TRAIN in the last make call)`).
SETTINGS := data.train=TRAIN data.test=TEST data.gold=GOLD teacher.base_url=TEACHER_URL \
	teacher.model=TEACHER_MODEL teacher.api_key_env=TEACHER_KEY_ENV
GIVEN := $(foreach s,$(SETTINGS),$(if $($(word 2,$(subst =, ,$(s)))),$(s)))
SET := $(foreach s,$(GIVEN),--set $(word 1,$(subst =, ,$(s)))=$($(word 2,$(subst =, ,$(s)))))
export ORCHESTRATOR_MAKE_VARIABLES := $(foreach s,$(GIVEN),$(s)$(if $(filter $(word 2,$(subst =, ,$(s))),$(FROM_LAST)),@last))
LIMIT_FLAG := $(if $(LIMIT),--limit $(LIMIT))
# a trial's distillation: the first 10*LIMIT training problems (LIMIT with a 0 appended)
DISTILL_LIMIT := $(if $(LIMIT),$(LIMIT)0)
# A changed variable re-runs what reads it: its value is kept in .make/<name>, rewritten
# only when it changes (a file given by a variable is a dependency only when it exists: a
# missing one gets the tool's own error, which names the variable).
remember = $(shell mkdir -p .make && { printf '%s\n' '$(2)' | cmp -s - .make/$(1) || printf '%s\n' '$(2)' > .make/$(1); }).make/$(1)
TRAIN_VALUE := $(call remember,train,$(TRAIN) $(TEACHER_URL) $(TEACHER_MODEL) $(TEACHER_KEY_ENV) $(DISTILL_LIMIT))
TEST_VALUE := $(call remember,test,$(TEST) $(LIMIT))
GOLD_VALUE := $(call remember,gold,$(GOLD))

DISTILLED := runs/distill/.done$(if $(DISTILL_LIMIT),-limit-$(DISTILL_LIMIT))
EVALUATE_SET := datasets/train_evaluate_instruct.json
ANSWER_ADAPTER := $(ANSWER_RUN)/adapter/adapter_model.safetensors
EVALUATE_ADAPTER := $(EVALUATE_RUN)/adapter/adapter_model.safetensors
ANSWER_MERGED := $(ANSWER_RUN)/merged/config.json
EVALUATE_MERGED := $(EVALUATE_RUN)/merged/config.json
# Where each model ends: its adapter when the role serves base + adapter (serve.weights adapter,
# or auto on a quantized base: `orchestrator weights` says which), else its merged model.
# A recipe that does not load stops a make that builds models, with its own Error line above.
MODEL_GOALS := $(filter answer-model evaluate-model infer score all eval package runs/%,$(MAKECMDGOALS))
ifneq ($(and $(wildcard $(ORCH)),$(MODEL_GOALS)),)
ANSWER_WEIGHTS := $(shell $(ORCH) weights answer --recipe $(ANSWER_RECIPE) || echo failed)
EVALUATE_WEIGHTS := $(shell $(ORCH) weights evaluate --recipe $(EVALUATE_RECIPE) || echo failed)
$(if $(filter failed,$(ANSWER_WEIGHTS) $(EVALUATE_WEIGHTS)),$(error make stopped: `orchestrator weights` could not read a recipe (its Error is above)))
endif
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

.PHONY: help setup setup-quant house-rules test test-fast demo check sample answer-model evaluate-model infer score all webui bench gpu-check gpu-wheels clean package image-check
.DEFAULT_GOAL := help

help: ## this list
	@echo "targets:"
	@awk -F '## ' '/^[a-z][a-z-]*:.*## / { split($$1, t, ":"); printf "  make %-16s %s\n", t[1], $$2 }' $(firstword $(MAKEFILE_LIST))
	@echo "variables, e.g. make all RECIPE=tiny TRAIN=data/train.jsonl TEACHER_URL=http://127.0.0.1:8000/v1:"
	@awk -F '## ' '/^[A-Z_]+ \?=.*## / { split($$1, v, " "); printf "  %-18s %s\n", v[1] "=", $$2 }' $(firstword $(MAKEFILE_LIST))

# ---------------------------------------------------------------- install
# A .venv made in another folder (the project moved or copied) does not run here: its scripts
# name the old folder. It is made again, and make says why.
VENV_ELSEWHERE := $(if $(wildcard $(STAMP)),$(shell head -1 $(ORCH) 2>/dev/null | grep -qF '!$(realpath $(BIN))/' || echo yes))
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

# The house rules first (lint, types, one-way imports: see pyproject.toml), then the tests;
# any failure fails `make test`.
house-rules: $(STAMP) ## ruff, mypy and lint-imports: what make test and make test-fast check first
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: house-rules $(QUANT_STAMP) ## lint, types, import layers, then the test suite
	$(BIN)/python -m pytest -q

# After each change: the tests that start no training, no `llamafactory-cli` and no browser.
test-fast: house-rules ## lint, types, import layers, then the tests not marked slow or browser
	$(BIN)/python -m pytest -q -m "not slow and not browser"

check: $(STAMP) ## render and check both role recipes with LLaMA-Factory's parser
	$(ORCH) check answer --recipe $(ANSWER_RECIPE)
	$(ORCH) check evaluate --recipe $(EVALUATE_RECIPE)

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
ifeq ($(RECIPE),tiny)
BASE := models/tiny-qwen2/config.json
$(BASE): | $(STAMP)
	$(ORCH) tiny-model models/tiny-qwen2
else ifneq ($(VARIANT_RECIPE),)
BASE := $(ANSWER_RUN)/.base-model
$(BASE): $(ANSWER_DEPS) | $(STAMP)
	$(ORCH) download answer --recipe $(ANSWER_RECIPE)
	mkdir -p $(@D) && touch $@
else
BASE := $(ANSWER_RUN)/.base-model
$(BASE): $(EVALUATE_DEPS) | $(STAMP)
	$(ORCH) download answer --recipe $(ANSWER_RECIPE)
	$(ORCH) download evaluate --recipe $(EVALUATE_RECIPE)
	mkdir -p $(@D) && touch $@
endif

# ---------------------------------------------------------------- train and merge
# A newer recipe or dataset only makes train check: content decides. Unchanged (train.yaml,
# dataset files, base model), it says `up to date` and trains nothing; changed, it trains again
# from scratch; an interrupted training (checkpoints, no adapter yet) resumes. merge the same.
$(ANSWER_ADAPTER): $(ANSWER_SET) $(ANSWER_DEPS) $(ANSWER_EXTRA) $(BASE)
	$(ORCH) train answer --recipe $(ANSWER_RECIPE)

$(EVALUATE_ADAPTER): $(EVALUATE_SET) $(EVALUATE_DEPS) $(EVALUATE_EXTRA) $(BASE)
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
# builds anything, `eval --check-only` refuses recipes that hold no problems out (its Error
# line printed as is), so `make eval` stops before hours of training.
EVAL_FLAGS = --recipe $(PIPELINE) --answer-recipe $(ANSWER_RECIPE) --evaluate-recipe $(EVALUATE_RECIPE)
ifneq ($(filter eval,$(MAKECMDGOALS)),)
ifneq ($(wildcard $(ORCH)),)
EVAL_REFUSED := $(shell $(ORCH) eval --check-only $(EVAL_FLAGS) >/dev/null || echo refused)
$(if $(EVAL_REFUSED),$(error make eval stopped before training: see the Error above))
endif
endif
$(EVAL_REPORT): $(ANSWER_MODEL) $(EVALUATE_MODEL) $(PIPELINE_DEPS) $(wildcard $(VAL)) $(TEST_VALUE)
	$(ORCH) eval --out-dir $(EVAL_DIR) $(EVAL_FLAGS) $(SET) $(LIMIT_FLAG)

eval: $(EVAL_REPORT) ## answer and score the held-out problems (dataset.val_size > 0)

# The submission image as a folder: the merged models the pipeline recipe's inference serves,
# the wheel, requirements.txt, Dockerfile, run.sh, MANIFEST. Packaging again copies nothing
# unchanged. Then: docker build -t submission $(OUT)
OUT ?= runs/$(PREFIX)image ## the folder make package writes
override OUT := $(strip $(OUT))
package: $(ANSWER_MERGED) $(EVALUATE_MERGED) $(PIPELINE_DEPS) ## the submission image's folder runs/<prefix>image (OUT=DIR): docker build it
	$(ORCH) package --out $(OUT) --recipe $(PIPELINE) $(SET)

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

webui: $(STAMP) ## LlamaBoard prefilled from recipes/<RECIPE>-<ROLE>.yaml
	$(ORCH) webui $(ROLE) --recipe recipes/$(PREFIX)$(ROLE).yaml $(if $(PORT),--port $(PORT))

sample: $(STAMP) ## regenerate the shipped synthetic sample (datasets/sample/)
	$(BIN)/python datasets/sample/make_sample.py --out datasets/sample

bench: $(STAMP) ## throughput benchmarks (docs/benchmarks.md)
	$(BIN)/python benchmarks/bench_endpoints.py

# The GPU check runs where there is no network: llamafactory and the pure-Python packages a lent
# machine (Python 3.12, torch, transformers and peft there) lacks travel as wheels, 64 MiB at most.
GPU_WHEELS ?= llamafactory==0.9.5 trl==0.24.0 accelerate==1.11.0 datasets==4.0.0 dill==0.3.8 \
	multiprocess==0.70.16 fsspec==2025.3.0 fire termcolor omegaconf \
	sse-starlette fastapi starlette uvicorn h11 tyro==0.8.14 docstring-parser shtab typeguard einops \
	modelscope click jinja2 openai distro jiter httpx httpcore anyio sniffio
GPU_SDISTS ?= antlr4-python3-runtime==4.9.3  # pure Python, published as source only: built here
gpu-check: ## the one GPU check (benchmarks/gpu_check.sh) [ARGS=--tiny]
	benchmarks/gpu_check.sh $(ARGS)

gpu-wheels: $(STAMP) ## the wheels the GPU check carries (benchmarks/wheels)
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 -d benchmarks/wheels $(GPU_WHEELS)
	$(BIN)/pip wheel --quiet --no-deps -w benchmarks/wheels $(GPU_SDISTS)
	@size=$$(du -sm benchmarks/wheels | cut -f1); echo "benchmarks/wheels: $$size MiB"; test $$size -le 64

clean: ## remove runs/ and the built datasets
	rm -rf runs .make datasets/*.json datasets/val.jsonl
