# agegender: every target creates the virtual environment it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: help install demo test test-fast tables audit-sample clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

install: $(STAMP)  ## create .venv and install the package (editable, with test extras)

$(STAMP): setup.cfg pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH; install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@# uv installs the same pinned ranges about twice as fast as pip (parallel downloads and unpacking);
	@# bytecode is compiled at install time because PYTHONDONTWRITEBYTECODE may forbid it later. pip is the fallback.
	$(PY) -m pip install --quiet --disable-pip-version-check uv && \
	  $(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -e ".[test]" || { \
	  echo "uv failed; installing with pip"; $(PY) -m pip install --quiet --upgrade pip && \
	  $(PY) -m pip install --quiet --progress-bar off -e ".[test]"; }
	@touch $(STAMP)

demo: install  ## generate faces; run the dual-task CNN and the Adience multi-task CNN at smoke scale (< 5 min on 2 cores)
	$(PY) -m reproductions.demo --out build/demo

test: install  ## run the whole test suite in TEST_WORKERS processes (slow tests included; about 9 min on 2 cores, 507 s measured idle)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: install  ## run the tests that do not train or touch thousands of files
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

tables: install  ## regenerate results/tables and results/README.md from run records and published figures
	$(PY) -m results

DATA_ROOT ?= ../shared/data
.PHONY: facts
facts: install  ## every published cell that needs no training, from the real data in DATA_ROOT (default ../shared/data) and the model builds: records in results/runs/facts, tables regenerated (~30 s; rerunning changes nothing)
	$(PY) -m reproductions.facts --data-root "$(DATA_ROOT)"

audit-sample: install  ## audit the real UTKFace sample in ../shared/data
	$(PY) -m agegender.data audit utkface --data-dir ../shared/data/utkface/sample --protocol speziali

clean:  ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache

# One target for any paper, by its catalogue key (the same key names its tables, logs and records' paper field);
# it runs the paper's own target below. ARGS="..." reaches every paper's command line (the older per-paper
# variables REPRO_ARGS, ADIENCE_ARGS, GU_YANG_ARGS, TRANSFER_ARGS and MTL_ARGS still work).
PAPER ?=
ARGS ?=
PAPER_TARGETS := speziali:reproduce-utkface-dual jorgensen:reproduce-adience gu_yang:reproduce-gu-yang dey_aggarwal:reproduce-utkface-transfer sundriyal:reproduce-mtl
.PHONY: reproduce
reproduce:  ## run the reproduction of PAPER=<key> (speziali, jorgensen, gu_yang, dey_aggarwal, sundriyal) with its data variables (DATA_DIR ...) and ARGS="..."; the same as the paper's own target below
	@target=$$(for pair in $(PAPER_TARGETS); do [ "$${pair%%:*}" = "$(PAPER)" ] && echo "$${pair#*:}"; done); \
	  test -n "$$target" || { echo "error: PAPER=<key>: one of speziali, jorgensen, gu_yang, dey_aggarwal, sundriyal (make reproduce PAPER=speziali DATA_DIR=...)"; exit 2; }; \
	  $(MAKE) --no-print-directory $$target

ADIENCE_ARGS ?=
.PHONY: reproduce-adience
reproduce-adience: install  ## Jørgensen (Adience): 5-fold CV of gender/age/multi-task/Xception models, Tables 1-3 (DATA_DIR=Adience root; offline: ADIENCE_ARGS="--weights none" or a weights file)
	@test -n "$(DATA_DIR)" || { echo "error: pass DATA_DIR=<Adience folder with fold_0_data.txt ... and aligned/>"; exit 2; }
	$(PY) -m reproductions.adience_levi --data-dir "$(DATA_DIR)" $(ADIENCE_ARGS) $(ARGS)

REPRO_ARGS ?=
.PHONY: reproduce-utkface-dual
reproduce-utkface-dual: install  ## Speziali: dual- vs single-task CNNs on UTKFace (DATA_DIR=UTKFace folder; REPRO_ARGS="--smoke" for a 1-min check; GPU advised)
	@test -n "$(DATA_DIR)" || { echo "error: set DATA_DIR to the UTKFace folder: make reproduce-utkface-dual DATA_DIR=~/data/UTKFace"; exit 2; }
	$(PY) -m reproductions.utkface_dual_cnn --data-dir "$(DATA_DIR)" $(REPRO_ARGS) $(ARGS)

DATASET ?=
TFDS_DIR ?= build/tfds
.PHONY: prepare
prepare: install  ## prepare DATASET (utkface, adience, celeba, imdb_wiki) from DATA_DIR once as TFDS records in TFDS_DIR (default build/tfds); reproductions read them with --tfds-dir
	@test -n "$(DATASET)" -a -n "$(DATA_DIR)" || { echo "error: make prepare DATASET=utkface DATA_DIR=~/data/UTKFace [TFDS_DIR=build/tfds]"; exit 2; }
	$(PY) -m agegender.data prepare $(DATASET) --data-dir "$(DATA_DIR)" --tfds-dir "$(TFDS_DIR)"

BENCH_ARGS ?=
BENCH_MODELS ?= levi_multitask dual_cnn xception_transfer efficientnet_b4
# a few small steps keep a CPU run short; on a GPU: BENCH_TRAIN_ARGS="--steps 50 --batch-size 64"
BENCH_TRAIN_ARGS ?= --steps 3 --batch-size 16
.PHONY: bench bench-scale
bench: install  ## measure the input pipeline against the JPEG decode limit, training steps per precision (4 models; BENCH_TRAIN_ARGS), predict latency; writes results/bench/ (about 15 min on 2 CPU cores)
	@mkdir -p results/bench
	$(PY) -m agegender.bench pipeline --json results/bench/pipeline.json $(BENCH_ARGS)
	$(PY) -m agegender.bench pipeline --size 200 --json results/bench/pipeline_no_resize.json $(BENCH_ARGS)
	for m in $(BENCH_MODELS); do $(PY) -m agegender.bench train --model $$m $(BENCH_TRAIN_ARGS) --json results/bench/train_$$m.json || exit 1; done
	$(PY) -m agegender.bench predict --json results/bench/predict_latency.json
	$(PY) -m agegender.bench report results/bench/*.json --out results/bench/README.md

bench-scale: install  ## audit/prepare/first-epoch time at 1k, 5k, 20k generated faces and peak memory on a 50k CelebA layout (about 40 min on 2 CPU cores; needs ~6 GB of disk under build/)
	@mkdir -p results/bench
	$(PY) -m agegender.bench scale --json results/bench/scale.json
	$(PY) -m agegender.bench memory --json results/bench/memory.json
	$(PY) -m agegender.bench report results/bench/*.json --out results/bench/README.md

TRANSFER_ARGS ?=
.PHONY: reproduce-utkface-transfer
reproduce-utkface-transfer: install  ## Dey & Aggarwal: UTKFace multi-head model on VGG19/ResNet50/InceptionV3/Xception/MobileNet/Transformer, Tables 1-3 (DATA_DIR=UTKFace folder; offline: TRANSFER_ARGS="--weights none"; GPU advised)
	@test -n "$(DATA_DIR)" || { echo "error: set DATA_DIR to the UTKFace folder: make reproduce-utkface-transfer DATA_DIR=~/data/UTKFace"; exit 2; }
	$(PY) -m reproductions.utkface_xception --data-dir "$(DATA_DIR)" --backbone all $(TRANSFER_ARGS) $(ARGS)

CORAL_DIR ?=
CELEBA_DIR ?=
BACKBONE_WEIGHTS ?=
SENET_WEIGHTS ?= $(BACKBONE_WEIGHTS)
RESNET_WEIGHTS ?=
MTL_ARGS ?=
MTL = $(PY) -m reproductions.mtl_weighted_loss $(MTL_ARGS) $(ARGS)
MTL_SENET = --backbone senet50_128 $(if $(SENET_WEIGHTS),--backbone-weights "$(SENET_WEIGHTS)")
MTL_RESNET = --backbone resnet50 $(if $(RESNET_WEIGHTS),--backbone-weights "$(RESNET_WEIGHTS)")
.PHONY: reproduce-mtl
reproduce-mtl: install  ## Sundriyal: learned loss weights + Early Freeze MTL on both backbones: SE-ResNet-50-128D (Tables 4.10, 4.15, 4.16, 5.1, 5.3-5.5, Sec. 5.2, Figs 4.7/4.8) and ResNet-50 (Tables 4.9, 4.14, 5.2, Sec. 5.3, Figs 5.3/5.4); DATA_DIR=UTKFace, CORAL_DIR=folder of utk_train.csv/utk_test.csv, CELEBA_DIR=CelebA; SENET_WEIGHTS / RESNET_WEIGHTS=converted VGGFace2 .h5, else ImageNet ResNet-50 substitutes (labelled); GPU advised; MTL_ARGS="--smoke" for a quick check
	@test -n "$(DATA_DIR)$(CELEBA_DIR)" || { echo "error: set DATA_DIR=<UTKFace> (and CORAL_DIR=<coral csv folder>) and/or CELEBA_DIR=<CelebA>"; exit 2; }
	@if [ -n "$(DATA_DIR)" ]; then set -e; U='--dataset utkface --data-dir "$(DATA_DIR)" $(if $(CORAL_DIR),--coral-csv-dir "$(CORAL_DIR)")'; \
	  eval $(MTL) $(MTL_SENET) $$U --method all; eval $(MTL) $(MTL_SENET) $$U --method mtl --loss average; \
	  eval $(MTL) $(MTL_SENET) $$U --method mtl --no-early-freeze; \
	  for L in 0.001 0.01 1; do eval $(MTL) $(MTL_SENET) $$U --method mtl --lambda $$L; done; \
	  eval $(MTL) $(MTL_RESNET) $$U --method all; fi
	@if [ -n "$(CELEBA_DIR)" ]; then set -e; C='--dataset celeba --data-dir "$(CELEBA_DIR)"'; \
	  eval $(MTL) $(MTL_SENET) $$C --method all; eval $(MTL) $(MTL_SENET) $$C --method mtl --loss average; \
	  eval $(MTL) $(MTL_RESNET) $$C --method all; eval $(MTL) $(MTL_RESNET) $$C --method mtl --loss average; fi

IMDB_WIKI ?=
UTKFACE ?=
GU_YANG_ARGS ?=
.PHONY: reproduce-gu-yang
reproduce-gu-yang: install  ## Gu & Yang: EfficientNet B4-B7 x 3/5/10 age groups x task sets on IMDB-WIKI, UTKFace, multi-source (IMDB_WIKI=... UTKFACE=...; GU_YANG_ARGS="--smoke" for a 5-min check; offline: GU_YANG_ARGS="--weights FOLDER"; GPU needed for real runs)
	@test -n "$(IMDB_WIKI)" -a -n "$(UTKFACE)" || { echo "error: pass IMDB_WIKI=<folder holding imdb_crop/imdb.mat> and UTKFACE=<UTKFace folder>"; exit 2; }
	$(PY) -m reproductions.efficientnet_age_groups --imdb-wiki "$(IMDB_WIKI)" --utkface "$(UTKFACE)" $(GU_YANG_ARGS) $(ARGS)

KIT_DIR ?= build/gpu-kit
KIT_QUALITY ?= 60
.PHONY: gpu-kit
gpu-kit: install  ## one folder (<= 60 MB) for a Linux box with Python 3.12 + JAX (CUDA), no TensorFlow or network: the project (HEAD), Keras wheels, the full UTKFace as a native-200-px WebP pack (KIT_QUALITY, default 60; DATA_ROOT as for facts); there: bash run.sh OUT (needs PyPI here; a few min on 2 cores)
	$(PY) -m agegender.gpu_kit build --data-dir "$(DATA_ROOT)/utkface/full" --out "$(KIT_DIR)" --quality $(KIT_QUALITY)
