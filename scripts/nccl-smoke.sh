#!/usr/bin/env bash
# One-GPU NCCL smoke test: a world of one rank through the NCCL process group (rendezvous,
# broadcast of the weights, bucketed all-reduce every update), 40 steps of the tiny MLM config
# on CUDA; passes when the run joined the group and the loss fell. NCCL refuses two ranks on one
# device, so more than one rank needs more GPUs (then use `pretune launch --nproc N`).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
BIN=${BIN:-target/release/pretune}
[ -x "$BIN" ] || cargo build --release --bin pretune
OUT=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT PRETUNE_FORCE_DIST=1 \
  "$BIN" train configs/pretrain-mlm-tiny.toml --set run.device=\"cuda\" --set train.max_steps=40 \
  --set train.log_every=10 --set metrics.listen=\"\" --set run.out_dir=\"$OUT\" 2>&1 | tee "$OUT/log.txt"
grep -q "joined the process group" "$OUT/log.txt" || { echo "FAIL: no process group"; exit 1; }
python3 - "$OUT/events.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"elapsed_s"' in l]
first, last = steps[0]["loss"], steps[-1]["loss"]
print(f"NCCL world 1: loss {first:.3f} -> {last:.3f} over {steps[-1]['step']} steps")
sys.exit(0 if last < first - 0.5 else 1)
PY
echo "PASS"
