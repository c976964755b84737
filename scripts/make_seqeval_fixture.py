"""Golden fixture for entity-level NER metrics, with `seqeval` 1.2.2 (what `run_ner.py` and the
`evaluate` library's `seqeval` metric call) as the oracle: seeded random gold / predicted tag
sequences in IOB1, IOB2, IOBES and BILOU-like prefixes (an `I-` without a `B-`, type changes
inside an entity, `E-` / `S-`, `U-` / `L-`, a hyphenated type), and for the whole set seqeval's
micro precision / recall / F1 (`precision_score`, `recall_score`, `f1_score`, default mode) and
its per-type report (`classification_report(..., output_dict=True)`).

    .venv/bin/python scripts/make_seqeval_fixture.py target/fixtures/seqeval
"""
import json
import pathlib
import random
import sys
import warnings

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

TYPES = ["PER", "LOC", "ORG", "creative-work"]


def sentence(rng: random.Random, n: int, prefixes: str) -> list:
    tags = []
    for _ in range(n):
        if rng.random() < 0.45:
            tags.append("O")
        else:
            tags.append(f"{rng.choice(prefixes)}-{rng.choice(TYPES)}")
    return tags


def noisy(rng: random.Random, gold: list, prefixes: str) -> list:
    """A prediction: gold with some tags changed, so many entities match and some do not."""
    return [t if rng.random() < 0.7 else ("O" if rng.random() < 0.4 else f"{rng.choice(prefixes)}-{rng.choice(TYPES)}") for t in gold]


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    cases = []
    for scheme, prefixes in [("iob2", "BI"), ("iob1", "I"), ("iobes", "BIES"), ("bilou", "BILU")]:
        gold = [sentence(rng, rng.randint(1, 25), prefixes) for _ in range(150)]
        pred = [noisy(rng, g, prefixes) for g in gold]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-division warnings: seqeval scores them 0
            report = classification_report(gold, pred, output_dict=True)
            micro = {"precision": precision_score(gold, pred), "recall": recall_score(gold, pred), "f1": f1_score(gold, pred)}
        types = {k: {m: float(v[m]) for m in ("precision", "recall", "f1-score", "support")} for k, v in report.items() if not k.endswith(" avg")}
        cases.append({"scheme": scheme, "gold": gold, "pred": pred, "micro": {k: float(v) for k, v in micro.items()}, "types": types})
    (out / "cases.json").write_text(json.dumps(cases))
    print(f"wrote {out}: {len(cases)} sets")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/seqeval"))
