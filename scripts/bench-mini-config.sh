# Sourced by the data-parallel benchmarks (bench-ddp.sh, bench-ddp-network.sh, bench-shards.sh):
# BERT-mini (4 layers, width 256, 4 heads, FFN 1024) MLM on the baseline's corpus and its
# WordPiece vocabulary, sequences of 128, fp32, one Masker, no checkpoints or metrics.
#   mini_config FILE NAME STEPS [EXTRA TOML...]   writes FILE; extra sections appended
# Needs BENCH_DATA (default .bench-data) built by ../shared/bench.
BENCH_DATA=${BENCH_DATA:-.bench-data}
TOK=$(ls -d "$BENCH_DATA"/cache/wordpiece-16000-*/ | head -n1)tokenizer.json
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
mini_config() {
  local file=$1 name=$2 steps=$3
  shift 3
  cat > "$file" <<TOML
[run]
name = "$name"
seed = 1
device = "cpu"
[data]
train = ["$PWD/$BENCH_DATA/corpus.txt"]
[tokenizer]
path = "$PWD/$TOK"
[model]
hidden_size = 256
num_layers = 4
num_heads = 4
intermediate_size = 1024
max_position_embeddings = 512
[objective]
kind = "mlm"
[train]
max_seq_len = 128
max_steps = $steps
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
  local extra
  for extra in "$@"; do printf '%s\n' "$extra" >> "$file"; done
}
