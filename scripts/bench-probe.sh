#!/usr/bin/env bash
# What a [[probe]] costs the Trainer (BENCHMARKS.md, "The live probe"): the tiny BERT of
# configs/pretrain-mlm-tiny.toml pre-trained STEPS updates with an evaluation every EVERY,
# without and with a zero-shot cloze probe on the spam dev set (180 records), in alternating
# rounds. The probe runs on the Evaluator's thread like the held-out evaluation; on a 2-core
# machine that thread shares the cores with the Trainer's. One JSON line per run: the run's
# tokens/s (its summary), its seconds, and the probe's own seconds per evaluation.
#   scripts/bench-probe.sh [ROUNDS] [STEPS] [EVERY]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
ROUNDS=${1:-3}
STEPS=${2:-300}
EVERY=${3:-50}
WORK=${WORK:-runs/bench-probe}
P=${PRETUNE:-target/release/pretune}
mkdir -p "$WORK"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs)
probe='probe=[{ name = "spam", data = "data/spam/dev.jsonl", pattern = "{text} All in all, this message is [MASK].", verbalizers = { ham = "personal", spam = "an offer" }, max_examples = 180 }]'
for r in $(seq 1 "$ROUNDS"); do
  for mode in none probe; do
    rm -rf "$WORK/run"
    extra=()
    [ "$mode" = probe ] && extra=(--set "$probe")
    out=$("$P" train configs/pretrain-mlm-tiny.toml --set run.out_dir="\"$WORK/run\"" --set metrics.listen='""' --set train.max_steps="$STEPS" \
      --set train.eval_every="$EVERY" --set train.checkpoint_every=0 "${extra[@]}" 2>/dev/null)
    tps=$(printf '%s\n' "$out" | grep -m1 "throughput" | grep -o '[0-9]*' | head -1)
    secs=$(printf '%s\n' "$out" | grep -m1 "  time " | grep -o '[0-9.]*' | head -1)
    probe_s=$( (grep -o '"probe.spam.seconds":[0-9.]*' "$WORK/run/events.jsonl" || true) | cut -d: -f2 | xargs | tr ' ' ,)
    echo "{\"round\": $r, \"probe\": \"$mode\", \"steps\": $STEPS, \"eval_every\": $EVERY, \"tokens_per_second\": $tps, \"seconds\": $secs, \"probe_seconds\": [$probe_s], \"cpu\": \"$cpu\"}"
  done
done
