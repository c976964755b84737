#!/usr/bin/env python3
"""The first N questions of a SQuAD JSON file, as a SQuAD JSON file (articles and paragraphs
kept in order, each paragraph with the questions taken from it).

    squad_subset.py IN.json N OUT.json
"""
import json
import sys


def main():
    src, want, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(src, encoding="utf-8") as f:
        squad = json.load(f)
    taken, data = 0, []
    for article in squad["data"]:
        paragraphs = []
        for p in article["paragraphs"]:
            qas = p["qas"][: max(0, want - taken)]
            taken += len(qas)
            if qas:
                paragraphs.append({"context": p["context"], "qas": qas})
        if paragraphs:
            data.append({"title": article.get("title", ""), "paragraphs": paragraphs})
        if taken >= want:
            break
    with open(dst, "w", encoding="utf-8") as f:
        json.dump({"version": squad.get("version", "1.1"), "data": data}, f)


if __name__ == "__main__":
    main()
