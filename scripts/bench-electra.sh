#!/usr/bin/env bash
# Pre-training throughput of replaced-token detection (BENCHMARKS.md, "ELECTRA"): `pretune
# bench pretrain --objective electra` and `--objective mlm` (the whole pipeline) against
# scripts/electra_peer.py, the plain PyTorch loop on `transformers`' ElectraForPreTraining and
# ElectraForMaskedLM of the same shape (generator a quarter as wide, shared embeddings),
# sides alternating, ROUNDS rounds, on the baseline's corpus and tokenizer. One JSON line per run.
#   scripts/bench-electra.sh [STEPS] [ROUNDS] [MODEL]
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
  for objective in electra mlm; do
    ours=$("$P" bench pretrain --objective "$objective" --model "$MODEL" --tokenizer "$TOK" --corpus "$CORPUS" --warmup 2 --steps "$STEPS" --threads 2 --out runs/bench-electra 2>/dev/null)
    echo "{\"round\": $round, \"side\": \"pretune-$objective\", \"cpu\": \"$cpu\", \"result\": $ours}"
  done
  theirs=$(.venv/bin/python scripts/electra_peer.py --tokenizer "$TOK" --corpus "$CORPUS" --model "$MODEL" --warmup 2 --steps "$STEPS" --threads 2 2>/dev/null)
  echo "{\"round\": $round, \"side\": \"transformers-electra\", \"cpu\": \"$cpu\", \"result\": $theirs}"
done
