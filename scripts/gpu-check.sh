#!/usr/bin/env bash
# Everything a lent GPU should show, in one command (about 6 minutes on one H100):
#   (a) builds in release (skipped when target/release/pretune exists: carry it);
#   (b) `pretune check` on CUDA and libtorch's view of the device;
#   (c) BERT-base MLM+NSP and GLM-base pre-training in bf16 (STEPS updates each, batch 128 x 128):
#       tokens/s, MFU (against the device's data-sheet peak) and peak device memory, next to
#       transformers.Trainer with bf16=True (and the plain PyTorch loop) on the same device;
#   (d) MiniLM fine-tuned on SQuAD as configs/finetune-qa-minilm.toml is written, capped at
#       QA_STEPS updates and the first 2,000 dev questions to fit the budget;
#   (e) the NCCL smoke test when two GPUs are present (scripts/nccl-smoke.sh on one);
#   (f) every number into bench-results/DATE-gpu-check/results.json, and a summary.
# On a machine without CUDA it stops at once, saying so (exit 3).
#   scripts/gpu-check.sh                  STEPS=200 QA_STEPS=400 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=$(command -v python || command -v python3)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no CUDA device here (nvidia-smi finds none): this script is for a machine with an NVIDIA GPU" >&2
  exit 3
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: torch (the libtorch pretune links) sees no CUDA device: install the CUDA wheel of torch==2.13.0 (scripts/setup.sh)" >&2
  exit 3
fi
STEPS=${STEPS:-200}
QA_STEPS=${QA_STEPS:-400}
BIN=${BIN:-target/release/pretune}
WORK=${WORK:-runs/gpu-check}
RESULT=${RESULT:-bench-results/$(date +%F)-gpu-check/results.json}
rm -rf "$WORK" && mkdir -p "$WORK"
t_start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - t_start )) s] $*" >&2; }

stamp "(a) build"
[ -x "$BIN" ] || cargo build --release --offline --bin pretune

stamp "(b) check"
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, torch {torch.__version__}, CUDA {torch.version.cuda}")' | tee "$WORK/device.txt"
"$BIN" check configs/pretrain-bert-mlm-nsp-base.toml --set 'run.device="cuda"' --set 'train.precision="bf16"' 2>&1 | tail -1 | tee "$WORK/check.txt"

# Samples the device's used memory while a run goes (NVML through nvidia-smi, every 0.5 s).
watch_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 500 > "$WORK/mem-$1.txt" 2>/dev/null & MEM_PID=$!; }
stop_mem() { kill "$MEM_PID" 2>/dev/null || true; wait "$MEM_PID" 2>/dev/null || true; }
common=(--set 'run.device="cuda"' --set 'train.precision="bf16"' --set 'metrics.listen=""' --set train.log_every=10 --set train.eval_every=0 --set train.checkpoint_every=0)

stamp "(c) BERT-base MLM+NSP, $STEPS updates"
watch_mem bert
"$BIN" train configs/pretrain-bert-mlm-nsp-base.toml "${common[@]}" --set train.batch_size=128 --set train.max_steps="$STEPS" --set "run.out_dir=\"$WORK/bert\"" 2>&1 | tail -4
stop_mem
stamp "(c) GLM-base, $STEPS updates"
watch_mem glm
"$BIN" train configs/pretrain-glm-base.toml "${common[@]}" --set train.batch_size=128 --set train.max_steps="$STEPS" --set "run.out_dir=\"$WORK/glm\"" 2>&1 | tail -4
stop_mem
stamp "(c) transformers.Trainer bf16=True, the same model and batch"
"$PY" scripts/hf_trainer_baseline.py --batch 128 --steps "$STEPS" --out "$WORK/hf-trainer-run" > "$WORK/hf-trainer.json" || echo '{"missing": "hf_trainer_baseline.py failed"}' > "$WORK/hf-trainer.json"
"$PY" scripts/gpu_baseline.py --model base --batch 128 --steps 40 > "$WORK/hf-loop.json" || echo '{"missing": "gpu_baseline.py failed"}' > "$WORK/hf-loop.json"

stamp "(d) MiniLM on SQuAD, $QA_STEPS updates"
if [ -f .cache/squad/train-v1.1.json ] && [ -d .cache/minilm/model ]; then
  watch_mem qa
  "$BIN" train configs/finetune-qa-minilm.toml --set 'run.device="cuda"' --set 'train.precision="bf16"' --set 'metrics.listen=""' \
    --set train.max_steps="$QA_STEPS" --set train.epochs=0 --set task.max_eval_examples=2000 --set "run.out_dir=\"$WORK/qa\"" 2>&1 | tail -4
  stop_mem
else
  echo "no .cache/squad or .cache/minilm (scripts/fetch-finetune-data.sh): skipped" >&2
fi

stamp "(e) NCCL"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  scripts/nccl-smoke.sh 2>&1 | tail -2 | tee "$WORK/nccl.txt"
else
  echo "one GPU: the NCCL smoke test needs two" >&2
fi

stamp "(f) summary"
"$PY" scripts/gpu_check_summary.py "$WORK" "$RESULT"
stamp "done"
