#!/usr/bin/env bash
# The measured tables of docs/pretraining-pays.md and docs/learning-rate.md, each a sweep spec
# in sweeps/ run with the release binary on this machine; each rewrites its table (between its
# markers) and plots from the runs' events.jsonl files (runs/sweeps/, runs/pretrain/; never
# committed). Finished runs are never rerun: a second call only renders, a cut one continues.
#   scripts/tables.sh                       # those nine (about 100 minutes on 2 cores)
#   scripts/tables.sh learning-rate         # one spec (sweeps/learning-rate.toml)
#   scripts/tables.sh electra-vs-mlm        # docs/electra.md's (about 23 minutes more)
#   scripts/tables.sh electra-temperature   # and its temperature table (about 19 minutes)
#   scripts/tables.sh overfitting --table-only
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || scripts/setup.sh
cargo build --release --bin pretune
specs=(pretraining-pays learning-rate pretraining-budget overfitting ner multiple-choice consistency transfer four-tasks)
if [ $# -gt 0 ] && [ -f "sweeps/$1.toml" ]; then specs=("$1"); shift; fi
for s in "${specs[@]}"; do
  start=$(date +%s)
  target/release/pretune sweep "sweeps/$s.toml" "$@"
  echo "sweeps/$s.toml: $(( $(date +%s) - start )) s" >&2
done
