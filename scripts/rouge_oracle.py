"""The ROUGE oracle: Google's rouge-score (PyPI rouge-score==0.1.2) on JSON pairs.

stdin: [[reference, prediction], ...]; stdout: [[rouge1, rouge2, rougeL], ...] F-measures, as
RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False) gives them. Used by the tests to
check src/finetune/rouge.rs.
"""
import json
import sys

from rouge_score import rouge_scorer

scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
out = []
for ref, pred in json.load(sys.stdin):
    s = scorer.score(ref, pred)
    out.append([s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure])
json.dump(out, sys.stdout)
