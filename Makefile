# brats-pipeline: every target is listed by `make help`.
# Variables can be set on the command line, e.g. `make preprocess DATA=/data/BraTS2021_Training_Data`.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# CPU build by default (a quick local install, no CUDA wheels). GPU workstation: make install TORCH_SPEC=torch
TORCH_SPEC  ?= torch==2.13.0
EXTRAS      ?= dev
CLI         := $(BIN)/brats-pipeline

# The synthetic cohort is the default data on a fresh machine.
SYNTH_DIR   ?= data/synthetic
SYNTH_CASES ?= 24
SYNTH_SIZE  ?= small
SYNTH_SEED  ?= 0
DATA        ?=
# TASK=NAME|FILE and CHANNELS=flair[,t2...] choose what the data list reads (default: the layout's task: kaggle-lgg, image-mask-2d, else the BraTS glioma task).
TASK        ?=
CHANNELS    ?=
TASK_ARGS    = $(if $(TASK),--task $(TASK)) $(if $(CHANNELS),--channels $(CHANNELS))
# `make preprocess` records which data list and cache it made, so a following `make train` uses them.
-include .make/dataset.mk
DATALIST    ?= data_lists/synthetic.json
CACHE       ?= cache/synthetic
WORKERS     ?= 2
# SHARD=K/N (1-based): preprocess, evaluate or predict only shard K of N of the cases (cases sorted by id, every
# N-th), for several machines sharing the folders; then `make preprocess` without SHARD, or `make merge-shards`.
SHARD       ?=
SHARD_ARGS   = $(if $(SHARD),--shard $(SHARD))

.DEFAULT_GOAL := help
.PHONY: help install test synth datalist preprocess clean

help:  ## List the targets and what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed  ## Create .venv and install the project (CPU PyTorch unless TORCH_SPEC says otherwise)

# TEST_WORKERS: pytest-xdist processes (auto: one per CPU core; 1: in this process, no xdist)
TEST_WORKERS ?= auto
test: $(VENV)/.installed  ## Install what the tests need, then run the whole test suite (TEST_WORKERS processes)
	$(BIN)/python -m pytest $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

synth: $(VENV)/.installed  ## Generate the synthetic BraTS-like cohort (SYNTH_DIR, SYNTH_CASES, SYNTH_SIZE)
	$(CLI) synth --out $(SYNTH_DIR) --cases $(SYNTH_CASES) --seed $(SYNTH_SEED) --size $(SYNTH_SIZE)

ifeq ($(strip $(DATA)),)
datalist: synth  ## Write the data list (DATA=DIR for a real release; default: the synthetic cohort; TASK, CHANNELS)
	$(CLI) datalist --data-root $(SYNTH_DIR) --out data_lists/synthetic.json --seed $(SYNTH_SEED) $(TASK_ARGS)
preprocess: datalist  ## Build the training cache (DATA=DIR for a real release; default: the synthetic cohort; TASK, CHANNELS, SHARD=K/N)
	$(CLI) preprocess --datalist data_lists/synthetic.json --cache cache/synthetic --workers $(WORKERS) $(SHARD_ARGS)
	@mkdir -p .make && printf 'DATALIST ?= data_lists/synthetic.json\nCACHE ?= cache/synthetic\n' > .make/dataset.mk
else
DATA_NAME := $(notdir $(patsubst %/,%,$(DATA)))
datalist: $(VENV)/.installed
	$(CLI) datalist --data-root $(DATA) --out data_lists/$(DATA_NAME).json $(TASK_ARGS)
preprocess: datalist
	$(CLI) preprocess --datalist data_lists/$(DATA_NAME).json --cache cache/$(DATA_NAME) --workers $(WORKERS) $(SHARD_ARGS)
	@mkdir -p .make && printf 'DATALIST ?= data_lists/$(DATA_NAME).json\nCACHE ?= cache/$(DATA_NAME)\n' > .make/dataset.mk
endif

clean:  ## Remove caches, outputs and build files (keeps .venv and data/)
	rm -rf cache outputs runs .make .pytest_cache build *.egg-info

# Training: the bundle's configs/train.yaml on the data list and cache `make preprocess` recorded.
# GPU workstation: make train DEVICE=cuda TRAIN_ARGS="--config bundles/brats_segmentation/configs/gpu_train.yaml"
MODE        ?= 2.5d
# EPOCHS=N overrides the configuration's epochs (train.yaml: 12)
EPOCHS      ?=
# FOLD=all (or make train-folds): every fold of the data list into RUN_DIR/fold<k>/, K times one fold's time
# FOLD=none: no case validates and every non-test case trains (a final model)
FOLD        ?= 0
DEVICE      ?= cpu
RUN_DIR     ?= runs/$(basename $(notdir $(DATALIST)))_$(MODE)_$(if $(filter all,$(FOLD)),folds,fold$(FOLD))
# TRACKING=mlflow: training loss and validation Dice in RUN_DIR/mlruns.db (MONAI's MLFlowHandler)
TRACKING    ?=
TRAIN_ARGS  ?=
.PHONY: train train-folds
train: $(VENV)/.installed  ## Train (MODE, EPOCHS, FOLD (all: every fold; none: no validation, every case trains), DEVICE, RUN_DIR, TRACKING=mlflow; TRAIN_ARGS="--resume --set batch_size=32 ...")
	$(CLI) train --datalist $(DATALIST) --cache $(CACHE) --mode $(MODE) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(filter all,$(FOLD)),--folds all,--fold $(FOLD)) --device $(DEVICE) --out $(RUN_DIR) $(if $(TRACKING),--tracking $(TRACKING)) $(TRAIN_ARGS)
train-folds: FOLD = all
train-folds: train  ## Train every fold into RUN_DIR/fold<k>/ (K times one fold's time; finished folds skipped); then make evaluate FOLD=all

# Evaluation and prediction with the model `make train` wrote (MODEL: any run or bundle folder; several,
# MODEL="runA runB", make an ensemble; with FOLD=all the default is every RUN_DIR/fold<k>).
# Without a trained run the bundle's pretrained model (trained on 21 real BraTS patients) segments.
BUNDLE       ?= bundles/brats_segmentation
MODEL        ?= $(if $(filter all,$(FOLD)),$(sort $(wildcard $(RUN_DIR)/fold*)),$(if $(wildcard $(RUN_DIR)/models/model.pt),$(RUN_DIR),$(BUNDLE)))
MODEL_NAME    = $(if $(word 2,$(MODEL)),$(notdir $(patsubst %/,%,$(dir $(firstword $(MODEL)))))_ensemble,$(notdir $(MODEL)))
SPLIT        ?= test
EVAL_DIR     ?= outputs/eval/$(MODEL_NAME)_$(SPLIT)
INPUT        ?= $(DATALIST)
PRED_DIR     ?= outputs/predictions/$(MODEL_NAME)
EVAL_ARGS    ?=
PREDICT_ARGS ?=
# NPROC=N: N processes on this machine under torchrun (DEVICE=cuda: one GPU each), rank 0 writing the reports
NPROC        ?=
INFER_CLI     = $(if $(NPROC),$(BIN)/torchrun --standalone --nproc-per-node $(NPROC) -m pipeline,$(CLI))
MERGE_DIR    ?= $(EVAL_DIR)
.PHONY: evaluate predict merge-shards
evaluate: $(VENV)/.installed  ## Score MODEL per patient on SPLIT of DATALIST -> EVAL_DIR (metrics.csv, summary.json, plots, overlays; NPROC, SHARD; EVAL_ARGS="--lesion-wise --tta --uncertainty")
	$(INFER_CLI) evaluate $(foreach model,$(MODEL),--model $(model)) --datalist $(DATALIST) --split $(SPLIT) --out $(EVAL_DIR) --device $(DEVICE) $(SHARD_ARGS) $(EVAL_ARGS)
predict: $(VENV)/.installed  ## Segment INPUT (case folder, data list or data root) with MODEL -> PRED_DIR (NIfTI + Slicer colour table; NPROC, SHARD; PREDICT_ARGS="--probabilities --uncertainty --submission-names")
	$(INFER_CLI) predict $(foreach model,$(MODEL),--model $(model)) --input $(INPUT) --out $(PRED_DIR) --device $(DEVICE) $(SHARD_ARGS) $(PREDICT_ARGS)
merge-shards: $(VENV)/.installed  ## Combine the SHARD=K/N runs of evaluate (MERGE_DIR, default EVAL_DIR) or predict (MERGE_DIR=PRED_DIR) into the full outputs
	$(CLI) merge-shards --out $(MERGE_DIR)

# Post-processing chosen on the out-of-fold predictions of the folds (MODEL: every fold's run folder), written
# into each run's inference.json, as nnU-Net does. Run it after training the folds.
TUNE_ARGS    ?=
.PHONY: tune-postprocessing
tune-postprocessing: $(VENV)/.installed  ## Choose post-processing on the folds' validation cases (MODEL="runs/a_fold0 runs/a_fold1 ..."; TUNE_ARGS="--dry-run")
	$(CLI) tune-postprocessing $(foreach model,$(MODEL),--model $(model)) --device $(DEVICE) $(TUNE_ARGS)

# The bundle's pretrained model, re-trained: every labelled case folder of PRETRAINED_DATA (default: the 21 real
# patients in ../shared/data) linked into PRETRAINED_DIR/data and listed with 11 folds (fold 0, 2 patients, validates
# each epoch; 19 train), trained with configs/train.yaml (its final weights kept), then installed in BUNDLE (export --format bundle).
SHARED_DATA     ?= ../shared/data
PRETRAINED_DATA ?= $(SHARED_DATA)/real_brats $(SHARED_DATA)/real_brats_train $(SHARED_DATA)/real_brats_more
PRETRAINED_DIR  ?= runs/pretrained
.PHONY: pretrained
pretrained: $(VENV)/.installed  ## Re-train the bundle's pretrained model on the real patients of PRETRAINED_DATA and install it (20 min to 1 h on 2 CPU cores; DEVICE, TRAIN_ARGS)
	@mkdir -p $(PRETRAINED_DIR)/data
	@for case in $(foreach root,$(PRETRAINED_DATA),$(wildcard $(root)/*/*_seg.nii*)); do dir=$$(dirname $$case); ln -sfn "$$(cd $$dir && pwd)" $(PRETRAINED_DIR)/data/$$(basename $$dir); done
	$(CLI) datalist --data-root $(PRETRAINED_DIR)/data --out $(PRETRAINED_DIR)/datalist.json --folds 11 --test-fraction 0 --seed 0
	$(CLI) preprocess --datalist $(PRETRAINED_DIR)/datalist.json --cache $(PRETRAINED_DIR)/cache --workers $(WORKERS)
	$(CLI) train --datalist $(PRETRAINED_DIR)/datalist.json --cache $(PRETRAINED_DIR)/cache --fold 0 --device $(DEVICE) --out $(PRETRAINED_DIR)/run $(TRAIN_ARGS)
	$(CLI) export --model $(PRETRAINED_DIR)/run --format bundle --out $(BUNDLE)

# Benchmarks: loader, training, inference and preprocessing side by side on one synthetic full-size cohort
# (kept in benchmarks/.work) -> benchmarks/results/<machine>-<date>.json and .md. GPU: make bench DEVICE=cuda
BENCH_ARGS  ?=
.PHONY: bench bench-quick
bench: $(VENV)/.installed  ## Full benchmarks (DEVICE; BENCH_ARGS="--json PATH"); see benchmarks/README.md
	$(BIN)/python -m benchmarks.run --device $(DEVICE) $(BENCH_ARGS)
bench-quick: $(VENV)/.installed  ## Quick benchmarks: fewer cases and iterations (under ~10 min on 2 CPU cores)
	$(BIN)/python -m benchmarks.run --quick --device $(DEVICE) $(BENCH_ARGS)

# What each shipped configuration needs (host RAM, GPU memory, time per epoch and per case, growth)
# -> benchmarks/results/resources-<machine>-<date>.json and .md. GPU figures: make bench-resources DEVICE=cuda
.PHONY: bench-resources
bench-resources: $(VENV)/.installed  ## Memory and time of every shipped configuration (DEVICE; BENCH_ARGS="--quick --json PATH")
	$(BIN)/python -m benchmarks.resources --device $(DEVICE) $(BENCH_ARGS)

# Real-data cross-validation: the pipeline against a plain 2.5D UNet trained for the same CPU time, on the 21
# labelled real BraTS patients in ../shared/data/real_brats{,_train,_more} (skipped when absent), 5 patient-level folds
# -> benchmarks/results/real_cv-<machine>-<date>-<label>.json and .md (Dice/HD95 per structure, NEC and ED included,
# and the label confusion per arm). Work folder (links, data list, cache, runs): benchmarks/work. Many hours on 2 CPU cores.
FOLDS       ?= 5
ARGS        ?=
.PHONY: bench-real
bench-real: $(VENV)/.installed  ## Cross-validate on the 21 real BraTS patients (FOLDS=5, EPOCHS: train.yaml's 12, DEVICE; ARGS="--label NAME --set key=value --fold K --tta")
	$(BIN)/python -m benchmarks.real_cv --folds $(FOLDS) $(if $(EPOCHS),--epochs $(EPOCHS)) --device $(DEVICE) $(ARGS)

# PLANAR=kaggle (Kaggle LGG, ../shared/data/lgg_kaggle_3m) or pairs (../shared/data/png_pairs)
PLANAR      ?= kaggle
.PHONY: bench-planar
bench-planar: $(VENV)/.installed  ## Cross-validate a real 2D data set against the plain 2D baseline at the same CPU time (PLANAR=kaggle|pairs; ARGS="--folds 5 --epochs 6 --task FILE --set key=value")
	$(BIN)/python -m benchmarks.planar_cv --data $(PLANAR) $(ARGS)

# The demo: the whole pipeline on the synthetic cohort on CPU, outputs under outputs/demo/ (cohort in
# SYNTH_DIR, data list data_lists/synthetic.json, cache cache/synthetic). A rerun reuses finished stages.
DEMO_OUT    ?= outputs/demo
DEMO_ARGS   ?=
.PHONY: demo export
demo: $(VENV)/.installed  ## Synthetic cohort -> preprocess -> train (CPU) -> evaluate -> NIfTI + report in outputs/demo/ (DEMO_ARGS="--epochs 4 ...")
	$(CLI) demo --out $(DEMO_OUT) --data-root $(SYNTH_DIR) --cases $(SYNTH_CASES) --size $(SYNTH_SIZE) --seed $(SYNTH_SEED) --workers $(WORKERS) $(DEMO_ARGS)

# Export a trained model: RUN_DIR/models/model.ts (MONAI ckpt_export) and model.onnx, each checked against PyTorch.
EXPORT_MODEL   ?= $(RUN_DIR)
EXPORT_FORMATS ?= torchscript onnx
export: $(VENV)/.installed  ## Export EXPORT_MODEL (default RUN_DIR; e.g. outputs/demo/run) to TorchScript and ONNX under its models/
	@for format in $(EXPORT_FORMATS); do $(CLI) export --model $(EXPORT_MODEL) --format $$format || exit 1; done
