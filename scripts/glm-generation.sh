#!/usr/bin/env bash
# GLM generation, measured: runs scripts/glm_generation.py with the release binary on this
# machine (about 30 minutes on 2 cores) and rewrites the table in docs/glm-generation.md from
# the runs' events.jsonl files (runs/glm-generation/, never committed). Set-up first if needed.
# Extra arguments go to the script (--table-only re-renders from existing runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || scripts/setup.sh
cargo build --release --bin pretune
exec python3 scripts/glm_generation.py --pretune target/release/pretune "$@"
