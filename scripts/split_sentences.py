"""Turn SOTU addresses (one address per file, one line each) into BERT's corpus format.

A rule-based sentence splitter: split after . ! ? (and closing quotes) when the next word starts
with a capital letter, a digit or a quote, except after common abbreviations. Good enough for
speech transcripts; documented rather than perfect.
"""
import argparse
import pathlib
import re

ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "sen", "rep", "gov", "u.s", "u.n",
          "no", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "jan", "feb", "aug", "sept", "oct",
          "nov", "dec", "inc", "co", "corp", "lt", "col", "capt", "hon", "messrs"}
BOUNDARY = re.compile(r'([.!?]["\u201d\']?)\s+(?=["\u201c\'(]?[A-Z0-9])')


def sentences(text: str):
    text = re.sub(r"\s+", " ", text).strip()
    out, start = [], 0
    for m in BOUNDARY.finditer(text):
        end = m.end(1)
        word = text[start:end].rsplit(" ", 1)[-1].rstrip('.!?"\'\u201d').lower()
        if m.group(1).startswith(".") and (word in ABBREV or re.fullmatch(r"[a-z]", word)):
            continue
        out.append(text[start:end].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--last", type=int, default=60, help="use the most recent N addresses")
    ap.add_argument("--valid", type=int, default=4, help="hold out the most recent N of them")
    a = ap.parse_args()
    files = sorted(pathlib.Path(a.src).glob("*.txt"))[-a.last:]
    train, valid = files[:-a.valid], files[-a.valid:]
    for name, group in (("train.txt", train), ("valid.txt", valid)):
        docs = ["\n".join(sentences(f.read_text(encoding="utf-8"))) for f in group]
        pathlib.Path(a.dst, name).write_text("\n\n".join(docs) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
