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
WORK=${WORK:-runs/bench-ddp}
P=${PRETUNE:-target/release/pretune}
mkdir -p "$WORK"
. scripts/bench-mini-config.sh
mini_config "$WORK/config.toml" bench-ddp "$STEPS"
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
  "$P" train "$WORK/config.toml" --set run.out_dir="\"$WORK/run\"" --set objective.sentence_pair="\"nsp\"" --set train.batch_size=32 --set run.threads=2 >"$WORK/one.out" 2>/dev/null
  echo "{\"round\": $round, \"run\": \"1 rank x 2 threads\", \"tokens_per_s\": $(throughput "$WORK/one.out"), \"cpu\": \"$cpu\"}"
  for v in $VARIANTS; do
    label=${v%%=*}; rest=${v#*=}; bin=${rest%%:*}; mb=${rest##*:}
    rm -rf "$WORK/run"
    log=$("$bin" launch --nproc 2 "$WORK/config.toml" --set run.out_dir="\"$WORK/run\"" --set objective.sentence_pair="\"nsp\"" --set train.batch_size=16 --set run.threads=1 --set dist.bucket_mb="$mb" 2>&1 >"$WORK/launch.out" || true)
    comm=$(printf '%s\n' "$log" | grep -o 'allreduce_ms_per_step=[0-9.]*' | cut -d= -f2 | xargs printf '%.1f ' | xargs)
    echo "{\"round\": $round, \"run\": \"2 ranks x 1 thread, $label\", \"tokens_per_s\": $(throughput "$WORK/launch.out"), \"waited_ms_per_step_by_rank\": \"$comm\", $(buckets), \"cpu\": \"$cpu\"}"
  done
done
