"""Prints, as JSON, what `transformers`' token-classification pipeline finds in texts with a
model folder (the oracle of `pretune predict` on raw text for NER): per text, its entity groups
with `aggregation_strategy="first"` (a word takes its first sub-token's tag, as pretune tags
words) as `{"type", "start", "end", "score"}`, and the words it saw (`"none"` strategy: each
sub-token with its offsets).

    .venv/bin/python scripts/hf_ner_pipeline.py MODEL_DIR '["Zoë met José in Paris.", ...]'
"""
import json
import sys

import transformers

model_dir, texts = sys.argv[1], json.loads(sys.argv[2])
ner = transformers.pipeline("token-classification", model=model_dir, aggregation_strategy="first", device="cpu")
out = []
for text in texts:
    groups = ner(text)
    out.append([{"type": g["entity_group"], "start": int(g["start"]), "end": int(g["end"]), "score": float(g["score"])} for g in groups])
print(json.dumps(out))
