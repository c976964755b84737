#!/usr/bin/env bash
# ModernBERT MLM pre-training throughput (BENCHMARKS.md, "ModernBERT pre-training"):
# `pretune bench pretrain --objective modernbert-mlm` (the whole pipeline: Loader, Masker at
# 30 %, Trainer) against scripts/modernbert_mlm_peer.py, the plain PyTorch loop on
# `transformers`' ModernBertForMaskedLM of the same shape, with its MLM head on every token
# (its default) and on the masked ones only (`--sparse`, as pretune's runs), sides alternating,
# ROUNDS rounds, on the baseline's corpus and tokenizer (../shared/bench, `make bench-data`).
# One JSON line per run.
#   scripts/bench-modernbert.sh [STEPS] [ROUNDS] [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 HF_HUB_OFFLINE=1
STEPS=${1:-10}
ROUNDS=${2:-3}
MODEL=${3:-mini}
P=${PRETUNE:-target/release/pretune}
TOK=${TOK:-$(ls -d .bench-data/cache/wordpiece-16000-*/ | head -1)tokenizer.json}
CORPUS=${CORPUS:-.bench-data/corpus.txt}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
for round in $(seq 1 "$ROUNDS"); do
  ours=$("$P" bench pretrain --objective modernbert-mlm --model "$MODEL" --tokenizer "$TOK" --corpus "$CORPUS" --warmup 2 --steps "$STEPS" --threads 2 --out runs/bench-modernbert 2>/dev/null)
  echo "{\"round\": $round, \"side\": \"pretune\", \"cpu\": \"$cpu\", \"result\": $ours}"
  for sparse in "" "--sparse"; do
    theirs=$(.venv/bin/python scripts/modernbert_mlm_peer.py --tokenizer "$TOK" --corpus "$CORPUS" --model "$MODEL" --warmup 2 --steps "$STEPS" --threads 2 $sparse 2>/dev/null)
    echo "{\"round\": $round, \"side\": \"transformers${sparse:+-sparse}\", \"cpu\": \"$cpu\", \"result\": $theirs}"
  done
done
