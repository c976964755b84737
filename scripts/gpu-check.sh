#!/usr/bin/env bash
# Everything a lent GPU should show, in one command (about 6 minutes on one H100):
#   (a) builds in release (skipped when target/release/pretune exists: carry it);
#   (b) `pretune check` on CUDA and libtorch's view of the device;
#   (c) BERT-base MLM+NSP and GLM-base pre-training in bf16 (STEPS updates each, batch 128 x 128):
#       tokens/s, MFU (against the device's data-sheet peak) and peak device memory, next to
#       transformers.Trainer with bf16=True (and the plain PyTorch loop) on the same device;
#   (d) MiniLM fine-tuned on SQuAD as configs/finetune-qa-minilm.toml is written, capped at
#       QA_STEPS updates and the first 2,000 dev questions to fit the budget;
#       then `pretune predict` with its checkpoint on QA_PREDICT dev questions, --device cuda and
#       --device cpu: the same answers, and the time each took;
#   (e) the NCCL smoke test when two GPUs are present (scripts/nccl-smoke.sh on one);
#   (f) every number into bench-results/DATE-gpu-check/results.json, and a summary.
# On a machine without CUDA it stops at once, saying so (exit 3).
#   scripts/gpu-check.sh                  STEPS=200 QA_STEPS=400 by default
#   SMOKE=1 scripts/gpu-check.sh          the same steps on the CPU with tiny batches and step
#                                         counts (the tests run it, so the script cannot rot)
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=$(command -v python || command -v python3)
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu PRECISION=fp32 BATCH=2 STEPS=${STEPS:-6} QA_STEPS=${QA_STEPS:-2} QA_BATCH=4 QA_EVAL=20 QA_TRAIN=64 QA_PREDICT=12 WARMUP=2 PEER_STEPS=3
  # The plumbing, not the models, is under test: two layers of each base model, GLM-base at 128
  # tokens (512 cost the CPU half a minute), the peer at its "mini" shape, 64 SQuAD records.
  SMOKE_SET=(--set train.max_seq_len=128 --set model.num_layers=2)
  PEER_MODEL=mini
else
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no CUDA device here (nvidia-smi finds none): this script is for a machine with an NVIDIA GPU (SMOKE=1 runs its steps on the CPU)" >&2
    exit 3
  fi
  if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: torch (the libtorch pretune links) sees no CUDA device: install the CUDA wheel of torch==2.13.0 (scripts/setup.sh)" >&2
    exit 3
  fi
  SMOKE_SET=()
  DEVICE=cuda PRECISION=bf16 BATCH=128 STEPS=${STEPS:-200} QA_STEPS=${QA_STEPS:-400} QA_BATCH=32 QA_EVAL=2000 QA_TRAIN=0 QA_PREDICT=500 WARMUP=20 PEER_STEPS=40
  PEER_MODEL=base
fi
BIN=${BIN:-target/release/pretune}
WORK=${WORK:-runs/gpu-check}
RESULT=${RESULT:-bench-results/$(date +%F)-gpu-check$([ "$SMOKE" = 1 ] && echo -smoke)/results.json}
rm -rf "$WORK" && mkdir -p "$WORK"
t_start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - t_start )) s] $*" >&2; }
on() { printf '%s=%s' "$1" "\"$2\""; }

stamp "(a) build"
[ -x "$BIN" ] || cargo build --release --offline --bin pretune

stamp "(b) check"
if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, torch {torch.__version__}, CUDA {torch.version.cuda}")' | tee "$WORK/device.txt"
else
  echo "cpu (SMOKE=1), $(nproc) cores" | tee "$WORK/device.txt"
fi
"$BIN" check configs/pretrain-bert-mlm-nsp-base.toml --set "$(on run.device "$DEVICE")" --set "$(on train.precision "$PRECISION")" 2>&1 | tail -1 | tee "$WORK/check.txt"

# Samples the device's used memory while a run goes (NVML through nvidia-smi, every 0.5 s).
MEM_PID=
watch_mem() { [ "$DEVICE" = cuda ] || return 0; nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 500 > "$WORK/mem-$1.txt" 2>/dev/null & MEM_PID=$!; }
stop_mem() { [ -n "$MEM_PID" ] || return 0; kill "$MEM_PID" 2>/dev/null || true; wait "$MEM_PID" 2>/dev/null || true; MEM_PID=; }
common=(--set "$(on run.device "$DEVICE")" --set "$(on train.precision "$PRECISION")" --set 'metrics.listen=""' --set train.log_every=1 --set train.eval_every=0 --set train.save_checkpoints=false --set train.batch_size="$BATCH" --set train.max_steps="$STEPS" ${SMOKE_SET[@]+"${SMOKE_SET[@]}"})

for model in bert glm; do
  config=configs/pretrain-bert-mlm-nsp-base.toml
  [ "$model" = glm ] && config=configs/pretrain-glm-base.toml
  stamp "(c) $config, $STEPS updates of $BATCH"
  watch_mem "$model"
  "$BIN" train "$config" "${common[@]}" --set "$(on run.out_dir "$WORK/$model")" 2>&1 | tail -4
  stop_mem
done
stamp "(c) the peers: transformers.Trainer bf16=True and the plain loop, the same model and batch"
if [ "$DEVICE" = cuda ]; then
  "$PY" scripts/hf_trainer_baseline.py --batch "$BATCH" --steps "$STEPS" --out "$WORK/hf-trainer-run" > "$WORK/hf-trainer.json" || echo '{"missing": "hf_trainer_baseline.py failed"}' > "$WORK/hf-trainer.json"
else
  echo '{"skipped": "the transformers.Trainer peer runs on CUDA only"}' > "$WORK/hf-trainer.json"
fi
"$PY" scripts/gpu_baseline.py --model "$PEER_MODEL" --device "$DEVICE" --precision "$PRECISION" --batch "$BATCH" --warmup "$WARMUP" --steps "$PEER_STEPS" > "$WORK/hf-loop.json" || echo '{"missing": "gpu_baseline.py failed"}' > "$WORK/hf-loop.json"

stamp "(d) MiniLM on SQuAD, $QA_STEPS updates"
if [ -f .cache/squad/train-v1.1.json ] && [ -d .cache/minilm/model ]; then
  watch_mem qa
  "$BIN" train configs/finetune-qa-minilm.toml --set "$(on run.device "$DEVICE")" --set "$(on train.precision "$PRECISION")" --set 'metrics.listen=""' \
    --set train.max_steps="$QA_STEPS" --set train.epochs=0 --set train.batch_size="$QA_BATCH" --set task.max_eval_examples="$QA_EVAL" --set task.max_train_examples="$QA_TRAIN" \
    --set train.checkpoint_every="$QA_STEPS" --set train.keep_last=1 --set "$(on run.out_dir "$WORK/qa")" 2>&1 | tail -4
  stop_mem
  stamp "(d) predict with the QA checkpoint on $QA_PREDICT dev questions: --device $DEVICE, then --device cpu"
  "$PY" scripts/squad_subset.py .cache/squad/dev-v1.1.json "$QA_PREDICT" "$WORK/qa-dev.json"
  for side in device cpu; do
    dev=$DEVICE
    [ "$side" = cpu ] && dev=cpu
    t0=$(date +%s.%N)
    "$BIN" predict --checkpoint "$WORK/qa/checkpoints" --input "$WORK/qa-dev.json" --device "$dev" --output "$WORK/qa-predict-$side.jsonl" 2>&1 | tail -1
    echo "$dev $t0 $(date +%s.%N)" > "$WORK/qa-predict-$side.time"
  done
else
  echo "no .cache/squad or .cache/minilm (scripts/fetch-finetune-data.sh): skipped" >&2
fi

stamp "(e) NCCL"
if [ "$DEVICE" = cuda ] && [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  scripts/nccl-smoke.sh 2>&1 | tail -2 | tee "$WORK/nccl.txt"
else
  echo "fewer than two GPUs: the NCCL smoke test is skipped" >&2
fi

stamp "(f) summary"
"$PY" scripts/gpu_check_summary.py "$WORK" "$RESULT" "$WARMUP"
stamp "done"
