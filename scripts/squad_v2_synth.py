#!/usr/bin/env python3
"""SQuAD v2.0-shaped data from SQuAD v1.1 (no v2.0 set ships in a registry package): the first N
questions of a SQuAD JSON file, every third asked instead of a paragraph of another article
(chosen with a seeded generator), where it has no answer (`is_impossible: true`, as v2.0 writes
it). Rajpurkar et al. (2018) wrote their unanswerable questions by hand to look answerable;
these are easier (the paragraph is off-topic), so a model trained on them abstains on
off-topic paragraphs, not on v2.0's adversarial ones.

    squad_v2_synth.py IN.json N OUT.json [SEED]
"""
import json
import random
import sys


def main():
    src, want, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    with open(src, encoding="utf-8") as f:
        squad = json.load(f)
    articles = squad["data"]
    taken, data = 0, []
    for a, article in enumerate(articles):
        paragraphs = []
        for p in article["paragraphs"]:
            for qa in p["qas"][: max(0, want - taken)]:
                taken += 1
                if taken % 3 == 0:
                    other = rng.choice([b for b in range(len(articles)) if b != a])
                    context = rng.choice(articles[other]["paragraphs"])["context"]
                    q = {"id": qa["id"] + "-none", "question": qa["question"], "answers": [], "is_impossible": True}
                    paragraphs.append({"context": context, "qas": [q]})
                else:
                    paragraphs.append({"context": p["context"], "qas": [dict(qa, is_impossible=False)]})
        if paragraphs:
            data.append({"title": article.get("title", ""), "paragraphs": paragraphs})
        if taken >= want:
            break
    with open(dst, "w", encoding="utf-8") as f:
        json.dump({"version": "v2.0", "data": data}, f)
    print(f"{dst}: {taken} questions, {taken // 3} without an answer")


if __name__ == "__main__":
    main()
