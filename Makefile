# The two commands of the README: `make demo` (pre-train the tiny BERT on the bundled corpus)
# and `make test` (the whole test suite). Both do every set-up step they need.

SHELL := /bin/bash
# tch finds libtorch through the venv's python (torch==2.13.0 from PyPI).
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup build demo test bench bench-bf16 bench-prepare pretraining-pays fixtures clean

setup:
	scripts/setup.sh

build: setup
	cargo build

# Both phases: pre-train the tiny BERT on the bundled corpus, then fine-tune it on the bundled
# spam / ham set, with a final evaluation report.
demo: build
	./target/debug/pretune train configs/pretrain-mlm-tiny.toml
	./target/debug/pretune train configs/finetune-cls-tiny.toml

test: setup
	cargo test

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

# What pre-training buys: fine-tuning with and without it, 3 seeds per cell, into
# docs/pretraining-pays.md (about 30 minutes on 2 cores).
pretraining-pays: setup
	scripts/pretraining-pays.sh

# Regenerate the parity fixtures (tests also create them on first use).
fixtures: setup
	for f in bert_mlm adamw heads minilm; do .venv/bin/python scripts/make_$${f}_fixture.py target/fixtures/$$f; done

clean:
	rm -rf target/fixtures runs
