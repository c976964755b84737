#!/usr/bin/env bash
# GPU benchmark: BERT-base and BERT-large pre-training (MLM + NSP, seq 128, bf16 autocast) for a
# fixed number of steps, pretune then the PyTorch + transformers baseline (bf16, SDPA, fused
# AdamW) on the same corpus, tokenizer and shapes; prints tokens/s, sequences/s, MFU and the
# ratio ours / baseline. About 5 minutes on an H100/H200; nothing comes from the network (run
# scripts/setup.sh and `cargo build --release` beforehand, or carry .venv and target/release).
#   scripts/gpu-bench.sh                    # base and large
#   MODELS=base STEPS=20 scripts/gpu-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1
BIN=${BIN:-target/release/pretune}
[ -x "$BIN" ] || cargo build --release --offline --bin pretune
DEVICE=${DEVICE:-cuda}
WARMUP=${WARMUP:-10}
STEPS=${STEPS:-40}
PEAK=${PEAK_TFLOPS:-989.4}
OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
for m in ${MODELS:-base large}; do
  case $m in base) B=${BATCH_BASE:-128} ;; large) B=${BATCH_LARGE:-64} ;; *) B=32 ;; esac
  echo "== $m, batch $B x 128, $STEPS timed steps" >&2
  "$BIN" bench pretrain --model "$m" --device "$DEVICE" --precision bf16 --batch "$B" --seq 128 \
    --warmup "$WARMUP" --steps "$STEPS" --log-every 10 --threads 4 --workers 2 --objective mlm-nsp \
    --corpus data/sotu/train.txt --tokenizer data/sotu/tokenizer.json --out "$OUT" > "$OUT/ours-$m.json"
  python scripts/gpu_baseline.py --model "$m" --device "$DEVICE" --batch "$B" --warmup "$WARMUP" --steps "$STEPS" \
    --peak-tflops "$PEAK" > "$OUT/hf-$m.json"
done
python3 - "$OUT" "$PEAK" ${MODELS:-base large} <<'PY'
import json, sys
out, peak, models = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
print("| model | side | tokens/s | seq/s | TFLOP/s (dense-equiv.) | MFU | ratio |")
print("|---|---|---|---|---|---|---|")
for m in models:
    o, h = json.load(open(f"{out}/ours-{m}.json")), json.load(open(f"{out}/hf-{m}.json"))
    tf = o["achieved_gflops_dense_equivalent"] / 1e3
    print(f"| {m} | pretune | {o['tokens_per_s']:,.0f} | {o['sequences_per_s']:,.1f} | {tf:.1f} | {tf / peak:.1%} | **{o['tokens_per_s'] / h['tokens_per_s']:.2f}x** |")
    print(f"| {m} | transformers | {h['tokens_per_s']:,.0f} | {h['sequences_per_s']:,.1f} | {h['tflops']:.1f} | {h['mfu']:.1%} | |")
PY
