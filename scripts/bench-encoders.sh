#!/usr/bin/env bash
# Fine-tuning throughput per architecture (BENCHMARKS.md, "Encoders side by side"): random
# BERT, RoBERTa, ELECTRA and ModernBERT folders of MiniLM's shape (scripts/make_encoder_folders.py),
# extractive QA on SQuAD windows of 256 tokens, batch 16, fp32, 2 threads:
# `pretune bench finetune --task qa --init DIR` against scripts/qa_peer.py --bench (the plain
# PyTorch loop on `transformers`' AutoModelForQuestionAnswering of the same folder), the two
# sides alternating, ROUNDS rounds. One JSON line per run.
#   scripts/bench-encoders.sh [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 HF_HUB_OFFLINE=1
STEPS=${1:-12}
ROUNDS=${2:-2}
WORK=${WORK:-runs/bench-encoders}
P=${PRETUNE:-target/release/pretune}
mkdir -p "$WORK"
[ -f "$WORK/folders/modernbert/model.safetensors" ] || .venv/bin/python scripts/make_encoder_folders.py "$WORK/folders" >/dev/null
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
for round in $(seq 1 "$ROUNDS"); do
  for arch in ${ARCHS:-bert roberta electra modernbert}; do
    dir="$WORK/folders/$arch"
    ours=$("$P" bench finetune --task qa --init "$dir" --batch 16 --seq 256 --doc-stride 96 --warmup 2 --steps "$STEPS" --threads 2 --out "$WORK/runs" 2>/dev/null)
    echo "{\"round\": $round, \"arch\": \"$arch\", \"side\": \"pretune\", \"cpu\": \"$cpu\", \"result\": $ours}"
    theirs=$(.venv/bin/python scripts/qa_peer.py --bench --model "$dir" --batch 16 --seq 256 --stride 96 --warmup 2 --steps "$STEPS" --threads 2 2>/dev/null)
    echo "{\"round\": $round, \"arch\": \"$arch\", \"side\": \"transformers\", \"cpu\": \"$cpu\", \"result\": $theirs}"
  done
done
