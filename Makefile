# One command per stage; make's own dependency rules skip every stage whose outputs are up
# to date, and every stage resumes, so an interrupted run is finished by typing it again.
#
#   make demo                       the whole pipeline on the shipped sample, tiny CPU model
#   make test                       the test suite
#   make answer-model [RECIPE=tiny] distil -> dataset answer -> download -> train -> merge (none: serve.weights adapter)
#   make answer-model RECIPE=recipes/answer-b.yaml   one Answer variant (runs/<its name>/)
#   make evaluate-model [RECIPE=tiny]
#   make infer / make score / make all [RECIPE=tiny]
#   make eval [RECIPE=tiny]         answer and score the held-out problems (dataset.val_size > 0)
#   make package [RECIPE=tiny]      the submission image's folder runs/<prefix>image (OUT=DIR): docker build it
#   make webui ROLE=answer [RECIPE=tiny]
#   make sample                     regenerate the shipped synthetic sample (datasets/sample/)
#   make gpu-check [ARGS=--tiny]    the one GPU check (benchmarks/gpu_check.sh); gpu-wheels: its wheels
#
# RECIPE=tiny uses recipes/tiny-answer.yaml, tiny-evaluate.yaml and tiny-pipeline.yaml (run
# folders runs/tiny-answer, runs/tiny-evaluate); by default the real answer.yaml, evaluate.yaml.
# RECIPE=<file>.yaml names one Answer recipe, e.g. a variant to vote over (dataset.subsample):
# its run folder and training set come from its own name: and dataset.name.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ORCH := $(BIN)/orchestrator
STAMP := $(VENV)/.installed

RECIPE ?=
TRAIN ?= datasets/sample/train.jsonl
TEST ?= datasets/sample/test.jsonl
GOLD ?= datasets/sample/test_gold.jsonl
ROLE ?= answer

VARIANT_RECIPE := $(filter %.yaml %.yml,$(RECIPE))
PREFIX := $(if $(VARIANT_RECIPE),,$(if $(RECIPE),$(RECIPE)-,))
PIPELINE ?= $(or $(wildcard recipes/$(PREFIX)pipeline.yaml),recipes/pipeline.yaml)
ANSWER_RECIPE := recipes/$(PREFIX)answer.yaml
EVALUATE_RECIPE := recipes/$(PREFIX)evaluate.yaml
ANSWER_RUN := runs/$(PREFIX)answer
EVALUATE_RUN := runs/$(PREFIX)evaluate
INFER_DIR := runs/$(PREFIX)infer
# What each stage depends on: the recipe in use and the parents it extends (the shipped
# chains: evaluate -> answer, tiny-evaluate -> tiny-answer -> answer, tiny-pipeline -> pipeline).
ANSWER_DEPS := $(sort $(ANSWER_RECIPE) recipes/answer.yaml)
EVALUATE_DEPS := $(sort $(EVALUATE_RECIPE) $(ANSWER_DEPS))
PIPELINE_DEPS := $(sort $(PIPELINE) recipes/pipeline.yaml)

DISTILLED := runs/distill/.done
ANSWER_SET := datasets/train_answer_instruct.json
ifneq ($(VARIANT_RECIPE),)
# the variant's run name and dataset name
VARIANT := $(shell $(BIN)/python -c 'from orchestrator.core.recipes import load_role as l; r = l("answer", "$(VARIANT_RECIPE)").recipe; print(r.run_name, r.dataset_name)' 2>/dev/null)
$(if $(VARIANT),,$(error RECIPE=$(VARIANT_RECIPE) is not an Answer recipe that loads; `orchestrator check answer --recipe $(VARIANT_RECIPE)` says why))
ANSWER_RECIPE := $(VARIANT_RECIPE)
ANSWER_RUN := runs/$(word 1,$(VARIANT))
ANSWER_SET := datasets/$(word 2,$(VARIANT)).json
ANSWER_DEPS := $(sort $(VARIANT_RECIPE) $(wildcard recipes/*answer*.yaml))
endif
EVALUATE_SET := datasets/train_evaluate_instruct.json
ANSWER_ADAPTER := $(ANSWER_RUN)/adapter/adapter_model.safetensors
EVALUATE_ADAPTER := $(EVALUATE_RUN)/adapter/adapter_model.safetensors
ANSWER_MERGED := $(ANSWER_RUN)/merged/config.json
EVALUATE_MERGED := $(EVALUATE_RUN)/merged/config.json
# Where each model ends: its adapter when the role serves base + adapter (serve.weights adapter,
# or auto on a quantized base: `orchestrator weights` says which), else its merged model.
ifneq ($(wildcard $(ORCH)),)
ANSWER_WEIGHTS := $(shell $(ORCH) weights answer --recipe $(ANSWER_RECIPE) 2>/dev/null)
EVALUATE_WEIGHTS := $(shell $(ORCH) weights evaluate --recipe $(EVALUATE_RECIPE) 2>/dev/null)
endif
ANSWER_MODEL := $(if $(filter adapter,$(ANSWER_WEIGHTS)),$(ANSWER_ADAPTER),$(ANSWER_MERGED))
EVALUATE_MODEL := $(if $(filter adapter,$(EVALUATE_WEIGHTS)),$(EVALUATE_ADAPTER),$(EVALUATE_MERGED))
SUBMISSION := $(INFER_DIR)/submission.jsonl
REPORT := $(INFER_DIR)/report.md
VAL := datasets/val.jsonl
EVAL_DIR := runs/$(PREFIX)eval
EVAL_REPORT := $(EVAL_DIR)/report.md

.PHONY: help setup test demo check sample answer-model evaluate-model infer score all webui bench gpu-check gpu-wheels clean package
.DEFAULT_GOAL := help

help:
	@sed -n '3,19p' Makefile | sed 's/^# \{0,1\}//'

# ---------------------------------------------------------------- install
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(STAMP)

# The house rules first (lint, types, one-way imports: see pyproject.toml), then the tests;
# any failure fails `make test`.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(ORCH) check answer --recipe $(ANSWER_RECIPE)
	$(ORCH) check evaluate --recipe $(EVALUATE_RECIPE)

# ---------------------------------------------------------------- data
$(DISTILLED): $(TRAIN) $(PIPELINE_DEPS) | $(STAMP)
	$(ORCH) distill --recipe $(PIPELINE) --input $(TRAIN)
	touch $@

$(ANSWER_SET): $(DISTILLED) $(ANSWER_DEPS)
	$(ORCH) dataset answer --recipe $(ANSWER_RECIPE) --pipeline $(PIPELINE) --input $(TRAIN)

$(EVALUATE_SET): $(DISTILLED) $(EVALUATE_DEPS)
	$(ORCH) dataset evaluate --recipe $(EVALUATE_RECIPE) --pipeline $(PIPELINE) --input $(TRAIN)

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
# A stale adapter (recipe or data changed) is retrained from scratch; an interrupted
# training (checkpoints, no adapter yet) resumes.
$(ANSWER_ADAPTER): $(ANSWER_SET) $(ANSWER_DEPS) $(BASE)
	$(ORCH) train answer --recipe $(ANSWER_RECIPE) $(if $(wildcard $@),--fresh)

$(EVALUATE_ADAPTER): $(EVALUATE_SET) $(EVALUATE_DEPS) $(BASE)
	$(ORCH) train evaluate --recipe $(EVALUATE_RECIPE) $(if $(wildcard $@),--fresh)

$(ANSWER_MERGED): $(ANSWER_ADAPTER)
	$(ORCH) merge answer --recipe $(ANSWER_RECIPE)

$(EVALUATE_MERGED): $(EVALUATE_ADAPTER)
	$(ORCH) merge evaluate --recipe $(EVALUATE_RECIPE)

answer-model: $(ANSWER_MODEL)
evaluate-model: $(EVALUATE_MODEL)

# ---------------------------------------------------------------- inference and score
$(SUBMISSION): $(ANSWER_MODEL) $(EVALUATE_MODEL) $(TEST) $(PIPELINE_DEPS)
	$(ORCH) infer $(TEST) --out-dir $(INFER_DIR) --recipe $(PIPELINE) \
		--answer-recipe $(ANSWER_RECIPE) --evaluate-recipe $(EVALUATE_RECIPE)

$(REPORT): $(SUBMISSION) $(GOLD)
	$(ORCH) score $(SUBMISSION) $(GOLD) --out-dir $(INFER_DIR)

infer: $(SUBMISSION)
score: $(REPORT)
all: $(REPORT)

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
$(EVAL_REPORT): $(ANSWER_MODEL) $(EVALUATE_MODEL) $(PIPELINE_DEPS) $(wildcard $(VAL))
	$(ORCH) eval --out-dir $(EVAL_DIR) $(EVAL_FLAGS)

eval: $(EVAL_REPORT)

# The submission image as a folder: the merged models the pipeline recipe's inference serves,
# the wheel, requirements.txt, Dockerfile, run.sh, MANIFEST. Packaging again copies nothing
# unchanged. Then: docker build -t submission $(OUT)
OUT ?= runs/$(PREFIX)image
package: $(ANSWER_MERGED) $(EVALUATE_MERGED) $(PIPELINE_DEPS)
	$(ORCH) package --out $(OUT) --recipe $(PIPELINE)

demo: | $(STAMP)
	$(MAKE) --no-print-directory check RECIPE=tiny
	$(MAKE) --no-print-directory all RECIPE=tiny
	@echo "demo done: the score is in runs/tiny-infer/report.md"

webui: $(STAMP)
	$(ORCH) webui $(ROLE) --recipe recipes/$(PREFIX)$(ROLE).yaml $(if $(PORT),--port $(PORT))

sample: $(STAMP)
	$(BIN)/python datasets/sample/make_sample.py --out datasets/sample

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_endpoints.py

# The GPU check runs where there is no network: llamafactory and the pure-Python packages a lent
# machine (Python 3.12, torch, transformers and peft there) lacks travel as wheels, 64 MiB at most.
GPU_WHEELS ?= llamafactory==0.9.5 trl==0.24.0 accelerate==1.11.0 datasets==4.0.0 dill==0.3.8 \
	multiprocess==0.70.16 fsspec==2025.3.0 fire termcolor omegaconf \
	sse-starlette fastapi starlette uvicorn h11 tyro==0.8.14 docstring-parser shtab typeguard einops \
	modelscope click jinja2 openai distro jiter httpx httpcore anyio sniffio
GPU_SDISTS ?= antlr4-python3-runtime==4.9.3  # pure Python, published as source only: built here
gpu-check:
	benchmarks/gpu_check.sh $(ARGS)

gpu-wheels: $(STAMP)
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 -d benchmarks/wheels $(GPU_WHEELS)
	$(BIN)/pip wheel --quiet --no-deps -w benchmarks/wheels $(GPU_SDISTS)
	@size=$$(du -sm benchmarks/wheels | cut -f1); echo "benchmarks/wheels: $$size MiB"; test $$size -le 64

clean:
	rm -rf runs datasets/*.json datasets/val.jsonl
