#!/usr/bin/env bash
# Prepared corpora side by side (BENCHMARKS.md, "Prepared corpora"): on the baseline's corpus
# and the corpus repeated 10 times,
#   * `pretune bench prepare` with 1 and 2 tokenizing workers against `datasets`'
#     load_dataset("text") + Dataset.map(batched=True, num_proc=1|2) with the same fast
#     tokenizer (scripts/bench_prepare_peer.py), alternating sides;
#   * `pretune bench resume`: config to the first example 90 % into the corpus, text vs prepared;
#   * `pretune bench stream` over a whole epoch from the text and from the prepared copy: the
#     Loader's peak RSS against corpus size.
# Raw JSON lines go to $OUT (default bench-results/<date>-prepared). About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
BENCH_DATA=${BENCH_DATA:-.bench-data}
OUT=${OUT:-bench-results/$(date +%F)-prepared}
WORK=${WORK:-runs/bench-prepare}
mkdir -p "$OUT" "$WORK"
[ -f "$BENCH_DATA/corpus.txt" ] || PYTHON=.venv/bin/python BENCH_DATA="$BENCH_DATA" bash ../shared/bench/make_corpus.sh
TOK=$(ls -d "$BENCH_DATA"/cache/wordpiece-16000-*/ | head -n1)tokenizer.json
[ -f "$TOK" ] || { echo "no baseline tokenizer under $BENCH_DATA/cache (run ../shared/bench/run_all.sh once, or scripts/bench-side-by-side.sh)" >&2; exit 1; }
cargo build --release --bin pretune
P=target/release/pretune
common=(--corpus "$BENCH_DATA/corpus.txt" --tokenizer "$TOK" --out "$WORK")
for scale in 1 10; do
  "$P" bench resume --scale "$scale" "${common[@]}" >/dev/null   # makes the scaled corpus and its prepared copy
  corpus="$BENCH_DATA/corpus.txt"
  [ "$scale" = 1 ] || corpus="$WORK/corpus-x$scale.txt"
  for round in 1 2; do
    for w in 1 2; do
      "$P" bench prepare --scale "$scale" --threads "$w" "${common[@]}" | tee -a "$OUT/prepare.jsonl"
      .venv/bin/python scripts/bench_prepare_peer.py "$corpus" "$TOK" --num-proc "$w" 2>/dev/null | tee -a "$OUT/prepare-peer-x$scale.jsonl"
    done
  done
  "$P" bench resume --scale "$scale" "${common[@]}" | tee -a "$OUT/resume.jsonl"
  "$P" bench stream --scale "$scale" "${common[@]}" | tee -a "$OUT/stream.jsonl"
  "$P" bench stream --scale "$scale" --prepared "${common[@]}" | tee -a "$OUT/stream.jsonl"
done
echo "raw results in $OUT"
