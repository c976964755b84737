#!/usr/bin/env bash
# pretune against the PyTorch + transformers baseline in ../shared/bench, side by side, on
# this machine. Builds what it needs first (nothing is timed while anything builds):
#   * the baseline's corpus (make_corpus.sh; Debian packages r-cran-janeaustenr, bible-kjv),
#   * the baseline's cached WordPiece vocabulary and NSP pairs (trained once, then reused by
#     both sides: WordPiece training is not bit-reproducible),
#   * accelerate in the venv (the HF Trainer needs it),
#   * pretune in the release profile.
# Then runs scripts/bench_side_by_side.py: alternating rounds, medians, ratios ours / baseline.
#   scripts/bench-side-by-side.sh                 # 3 rounds (about 25 minutes on 2 cores)
#   ROUNDS=1 ONLY=mask,tokenize scripts/bench-side-by-side.sh
#   ONLY=qa scripts/bench-side-by-side.sh          # QA fine-tuning alone (about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-../shared/bench}
export BENCH_DATA=${BENCH_DATA:-.bench-data}
export LIBTORCH_USE_PYTORCH=1 PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -x .venv/bin/python ] || scripts/setup.sh
.venv/bin/python -c "import accelerate" 2>/dev/null || .venv/bin/pip install -q "accelerate==1.15.0"
# QA alone starts from MiniLM on SQuAD (fetched by the set-up): no corpus, no vocabulary.
if [ "${ONLY:-}" != qa ]; then
[ -s "$BENCH_DATA/corpus.txt" ] || PYTHON=python3 bash "$BENCH_DIR/make_corpus.sh"
.venv/bin/python - "$BENCH_DIR" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import common
class A:
    corpus = common.DEFAULT_CORPUS; cache_dir = common.DEFAULT_CACHE; vocab_size = 16000; seed = 0
tok = common.load_fast_tokenizer(A)
common.cached_nsp_examples(A, tok)
print("vocabulary:", common.tokenizer_dir(A), file=sys.stderr)
PY
fi
cargo build --release --bin pretune
exec .venv/bin/python scripts/bench_side_by_side.py --pretune target/release/pretune --py .venv/bin/python \
  --bench-dir "$BENCH_DIR" --data "$BENCH_DATA" --rounds "${ROUNDS:-3}" ${ONLY:+--only "$ONLY"} "$@"
