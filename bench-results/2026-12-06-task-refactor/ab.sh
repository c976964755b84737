#!/usr/bin/env bash
# Before / after the "task is a type" refactor (#29): `pretune bench pretrain` (MLM+NSP) and
# `pretune bench finetune` with the release binary of aaf083d (before) and of the refactor
# (after), alternating which goes first in each round, on the baseline's corpus and vocabulary.
#   bench-results/2026-12-06-task-refactor/ab.sh BEFORE_BIN AFTER_BIN ROUNDS > results.jsonl
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
tok=$(ls .bench-data/cache/wordpiece-16000-*/tokenizer.json | head -1)
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for w in pretrain finetune; do
    for side in $order; do
      bin=$before; [ "$side" = after ] && bin=$after
      out=$("$bin" bench "$w" --tokenizer "$tok" --warmup 3 --steps 20 --out "runs/ab-$side" 2>/dev/null | tail -1)
      echo "{\"round\": $r, \"side\": \"$side\", \"workload\": \"$w\", \"result\": $out}"
    done
  done
done
