#!/usr/bin/env bash
# Data-parallel overhead on this machine (BENCHMARKS.md, "Data-parallel"): BERT-mini MLM+NSP on
# the baseline's corpus, global batch 32 x 128, 1 rank x 2 threads against 2 ranks x 1 thread
# (`pretune launch`, Gloo over loopback), alternating, ROUNDS rounds. Prints tokens/s of each run
# and each rank's all-reduce time per update that was not hidden behind compute.
#   scripts/bench-ddp.sh [STEPS] [ROUNDS]
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
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/run"
  one=$("$P" train "$WORK/config.toml" --set train.batch_size=32 --set run.threads=2 2>/dev/null | awk '/throughput/ {print $2}')
  rm -rf "$WORK/run"
  two_log=$("$P" launch --nproc 2 "$WORK/config.toml" --set train.batch_size=16 --set run.threads=1 2>&1 >"$WORK/launch.out" || true)
  two=$(awk '/throughput/ {print $2}' "$WORK/launch.out")
  comm=$(printf '%s\n' "$two_log" | grep -o 'allreduce_ms_per_step=[0-9.]*' | cut -d= -f2 | tr '\n' ' ')
  echo "{\"round\": $round, \"steps\": $STEPS, \"one_rank_tokens_per_s\": $one, \"two_ranks_tokens_per_s\": $two, \"allreduce_ms_per_step_by_rank\": \"$comm\", \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\"}"
done
