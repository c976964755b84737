#!/usr/bin/env bash
# Decoding speed, pretune vs transformers' generate() (scripts/bench_generate.py), with the
# release binary on this machine; a few minutes on 2 cores. Arguments go to the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH"
[ -x .venv/bin/python ] || scripts/setup.sh
cargo build --release --bin pretune
exec python3 scripts/bench_generate.py --pretune target/release/pretune "$@"
