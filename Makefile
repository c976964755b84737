# The two commands of the README: `make demo` (pre-train the tiny BERT on the bundled corpus)
# and `make test` (the whole test suite). Both do every set-up step they need.

SHELL := /bin/bash
# tch finds libtorch through the venv's python (torch==2.13.0 from PyPI).
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup build demo test bench bench-bf16 bench-prepare tables table-pretraining-pays table-learning-rate table-pretraining-budget table-overfitting table-ner table-multiple-choice table-consistency table-transfer table-four-tasks table-electra table-electra-temperature fixtures clean

setup:
	scripts/setup.sh

build: setup
	cargo build

# Both phases: pre-train the tiny BERT on the bundled corpus, then fine-tune it on the bundled
# spam / ham set, with a final evaluation report.
demo: build
	./target/debug/pretune train configs/pretrain-mlm-tiny.toml
	./target/debug/pretune train configs/finetune-cls-tiny.toml

# One libtorch thread per run (OMP_NUM_THREADS, read as PyTorch reads it) and a test per core:
# two trainings that each take a team of every core spin against each other, measured 4x
# slower each on 2 cores.
test: setup
	OMP_NUM_THREADS=1 cargo test

# pretune against the PyTorch + transformers baseline in ../shared/bench, side by side
# (release build, alternating rounds, medians and ratios; about 25 minutes on 2 cores).
bench: setup
	scripts/bench-side-by-side.sh

# The same in bf16 on both sides (baseline: CPU autocast, Trainer bf16=True; pretune:
# precision = "bf16"). Worth it on CPUs with AMX-BF16 or AVX512-BF16.
bench-bf16: setup
	scripts/bench-side-by-side.sh --bf16

# Prepared corpora: `data prepare` vs datasets' Dataset.map, resume time and Loader memory,
# text vs prepared, on the baseline's corpus x1 and x10 (about 15 minutes on 2 cores).
bench-prepare: setup
	scripts/bench-prepare.sh

# The measured tables of docs/pretraining-pays.md and docs/learning-rate.md: each a sweep spec
# in sweeps/ (3 seeds per cell), rewritten into docs/ with its plots; finished runs are never
# rerun. Wall times on 2 cores (AMD EPYC Zen 4) in each doc and docs/sweeps.md; the eight
# together about 85 minutes from nothing (the largest, table-four-tasks, about 22).
tables: setup
	scripts/tables.sh

# What pre-training buys: 5 starting points x 3 sets x 2 sizes (docs/pretraining-pays.md).
table-pretraining-pays: setup
	scripts/tables.sh pretraining-pays

# Learning rate on MiniLM and on our tiny BERT, with encoder drift (docs/learning-rate.md).
table-learning-rate: setup
	scripts/tables.sh learning-rate

# Downstream accuracy by pre-training steps, and the live probe (docs/pretraining-pays.md).
table-pretraining-budget: setup
	scripts/tables.sh pretraining-budget

# Over-fitting on 32 examples per class, with and without early stopping.
table-overfitting: setup
	scripts/tables.sh overfitting

# Entity F1 on WNUT-16 and People's Daily: random init vs our checkpoints vs MiniLM.
table-ner: setup
	scripts/tables.sh ner

table-multiple-choice: setup
	scripts/tables.sh multiple-choice

# One GLM checkpoint with a classification head vs as cloze, English and Chinese.
table-consistency: setup
	scripts/tables.sh consistency

# English and Chinese checkpoints on English and Chinese sentiment (2 x 2, random init floor).
table-transfer: setup
	scripts/tables.sh transfer

# One checkpoint, four tasks (classification, NER, QA, cloze) vs random init and MiniLM.
table-four-tasks: setup
	scripts/tables.sh four-tasks

# ELECTRA against MLM at equal updates and equal time (docs/electra.md; about 23 minutes
# beside the tables above, whose MLM checkpoints it shares).
table-electra: setup
	scripts/tables.sh electra-vs-mlm

# What the tiny ELECTRA discriminator learns by the generator's sampling temperature
# (docs/electra.md; 12 runs of 600 updates, about 19 minutes).
table-electra-temperature: setup
	scripts/tables.sh electra-temperature

# Regenerate the parity fixtures (tests also create them on first use).
fixtures: setup
	for f in bert_mlm adamw heads minilm; do .venv/bin/python scripts/make_$${f}_fixture.py target/fixtures/$$f; done

clean:
	rm -rf target/fixtures runs
