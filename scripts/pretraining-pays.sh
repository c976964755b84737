#!/usr/bin/env bash
# What pre-training buys: runs scripts/pretraining_pays.py with the release binary on this
# machine (about 30 minutes on 2 cores) and rewrites the table in docs/pretraining-pays.md from
# the runs' events.jsonl files (runs/pretraining-pays/, never committed). Set-up first if
# needed. Extra arguments go to the script (--table-only re-renders from existing runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || scripts/setup.sh
cargo build --release --bin pretune
exec python3 scripts/pretraining_pays.py --pretune target/release/pretune "$@"
