#!/usr/bin/env bash
# Data-parallel overhead on this machine (BENCHMARKS.md, "Data-parallel"): BERT-mini MLM+NSP on
# the baseline's corpus, global batch 32 x 128, 1 rank x 2 threads against 2 ranks x 1 thread
# (`pretune launch`, Gloo over loopback), alternating, ROUNDS rounds. Prints tokens/s of each run,
# each rank's communication time per update that was not hidden behind compute, and the
# reducer's buckets. BEFORE=path/to/older/pretune adds that build's 2-rank run.
#   [BEFORE=...] scripts/bench-ddp.sh [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
STEPS=${1:-40}
ROUNDS=${2:-2}
BENCH_DATA=${BENCH_DATA:-.bench-data}
TOK=$(ls -d "$BENCH_DATA"/cache/wordpiece-16000-*/ | head -n1)tokenizer.json
WORK=${WORK:-runs/bench-ddp}
P=${PRETUNE:-target/release/pretune}
mkdir -p "$WORK"
cat > "$WORK/config.toml" <<TOML
[run]
name = "bench-ddp"
seed = 1
out_dir = "$WORK/run"
device = "cpu"
[data]
train = ["$BENCH_DATA/corpus.txt"]
[tokenizer]
path = "$TOK"
[model]
hidden_size = 256
num_layers = 4
num_heads = 4
intermediate_size = 1024
max_position_embeddings = 512
[objective]
kind = "mlm"
sentence_pair = "nsp"
[train]
max_seq_len = 128
max_steps = $STEPS
lr = 1e-4
warmup_steps = 0
log_every = 10
checkpoint_every = 0
precision = "fp32"
[pipeline]
masker_workers = 1
[metrics]
listen = ""
TOML
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
# Rank 0's tokens/s from a run's output; the mean exposed all-reduce and bucket count per
# update after the first (the reducer's `buckets` in events.jsonl; absent before the reducer).
throughput() { awk '/throughput/ {print $2; exit}' "$1"; }
buckets() {
  .venv/bin/python - "$WORK/run/events.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"buckets"' in l]
rows = [r["buckets"] for r in rows if r.get("step", 0) > 1]
if rows:
    exposed = sum(r["exposed_ms"] for r in rows) / len(rows)
    n = sum(len(r["launched_ms"]) for r in rows) / len(rows)
    first = sum(-r["launched_ms"][0] for r in rows) / len(rows)
    print(f'"exposed_ms": {exposed:.1f}, "buckets": {n:.1f}, "first_bucket_launched_ms_before_end": {first:.1f}')
else:
    print('"exposed_ms": null')
PY
}
# VARIANTS: "label=binary:bucket_mb" entries; the default compares this build at DDP's 25 MiB
# and at 4 MiB with BEFORE (a build of the bucketed all-reduce after the backward, if set).
VARIANTS=${VARIANTS:-"reducer-25=$P:25 reducer-4=$P:4${BEFORE:+ gradsync-25=$BEFORE:25}"}
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/run"
  "$P" train "$WORK/config.toml" --set train.batch_size=32 --set run.threads=2 >"$WORK/one.out" 2>/dev/null
  echo "{\"round\": $round, \"run\": \"1 rank x 2 threads\", \"tokens_per_s\": $(throughput "$WORK/one.out"), \"cpu\": \"$cpu\"}"
  for v in $VARIANTS; do
    label=${v%%=*}; rest=${v#*=}; bin=${rest%%:*}; mb=${rest##*:}
    rm -rf "$WORK/run"
    log=$("$bin" launch --nproc 2 "$WORK/config.toml" --set train.batch_size=16 --set run.threads=1 --set dist.bucket_mb="$mb" 2>&1 >"$WORK/launch.out" || true)
    comm=$(printf '%s\n' "$log" | grep -o 'allreduce_ms_per_step=[0-9.]*' | cut -d= -f2 | xargs printf '%.1f ' | xargs)
    echo "{\"round\": $round, \"run\": \"2 ranks x 1 thread, $label\", \"tokens_per_s\": $(throughput "$WORK/launch.out"), \"waited_ms_per_step_by_rank\": \"$comm\", $(buckets), \"cpu\": \"$cpu\"}"
  done
done
