#!/usr/bin/env bash
# Bytes of token ids each rank reads from a prepared corpus (BENCHMARKS.md, "Shards per rank"):
# the baseline's corpus prepared once, BERT-mini MLM (packed segments) and MLM+NSP (pairs),
# global batch 32 × 128 for STEPS updates, `pretune launch --nproc N` for N = 1, 2, 4 (N > 1
# reads only each rank's examples; one process reads its blocks whole). Prints one JSON line
# per run with every rank's bytes (the Loader's log line).
#   scripts/bench-shards.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
STEPS=${1:-20}
WORK=${WORK:-runs/bench-shards}
P=${PRETUNE:-target/release/pretune}
mkdir -p "$WORK"
. scripts/bench-mini-config.sh
mini_config "$WORK/config.toml" bench-shards "$STEPS"
sed -i 's/^\[data\]$/[data]\neval = []/' "$WORK/config.toml"
[ -f "$WORK/prepared/manifest.json" ] || "$P" data prepare "$WORK/config.toml" --out "$WORK/prepared" >/dev/null
for pair in none nsp; do
  for n in 1 2 4; do
    rm -rf "$WORK/run"
    cmd=(train)
    [ "$n" = 1 ] || cmd=(launch --nproc "$n")
    log=$("$P" "${cmd[@]}" "$WORK/config.toml" --set run.out_dir="\"$WORK/run\"" --set run.threads=1 --set "data.train=[\"$WORK/prepared\"]" --set objective.sentence_pair="\"$pair\"" \
      --set train.batch_size=$((32 / n)) 2>&1 >/dev/null)
    bytes=$(printf '%s\n' "$log" | grep -o 'token_bytes_read=[0-9]*' | cut -d= -f2 | xargs)
    echo "{\"sentence_pair\": \"$pair\", \"ranks\": $n, \"steps\": $STEPS, \"global_batch\": 32, \"token_bytes_read_by_rank\": \"$bytes\", \"tokens_bytes_in_corpus\": $(stat -c %s "$WORK/prepared/train/tokens.bin"), \"cpu\": \"$cpu\"}"
  done
done
