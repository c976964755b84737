"""Prints, as JSON, the flattened logits `transformers` computes for token ids with a model
folder (used by the export round-trip tests; for AutoModelForMultipleChoice the rows are the
choices of one example).

    .venv/bin/python scripts/hf_logits.py MODEL_DIR AutoModelForSequenceClassification '[[2, 5, 3]]'

With a fourth argument, a JSON list of `[text, pair or null]`, it prints an object instead:
`{"logits": [...], "model_max_length": N, "tokens": [{"input_ids": [...], "token_type_ids":
[...] or null}, ...]}`, each text encoded by `AutoTokenizer.from_pretrained(MODEL_DIR)` as a
user would (`tokenizer(text, pair, truncation=True)`), so the test can check that the exported
tokenizer frames, cases and truncates as pretune does.
"""
import json
import sys

import torch
import transformers

model_dir, auto_class, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
model = getattr(transformers, auto_class).from_pretrained(model_dir).eval()
# Rows of different lengths are padded with 0 and masked out (the logits of padding come back
# too, flattened as [batch, longest, ...]).
longest = max(len(r) for r in ids)
mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in ids])
input_ids = torch.tensor([r + [0] * (longest - len(r)) for r in ids])
if auto_class == "AutoModelForMultipleChoice":
    # The rows are the choices of one example: `[1, choices, tokens]`.
    input_ids, mask = input_ids[None], mask[None]
with torch.no_grad():
    out = model(input_ids=input_ids, attention_mask=mask)
    # Question answering: start and end logits, interleaved per token as `[batch, seq, 2]`.
    logits = torch.stack([out.start_logits, out.end_logits], -1) if hasattr(out, "start_logits") else out.logits
logits = logits.double().flatten().tolist()
if len(sys.argv) > 4:
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokens = []
    for text, pair in json.loads(sys.argv[4]):
        enc = tokenizer(text, pair, truncation=True)
        tokens.append({"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")})
    print(json.dumps({"logits": logits, "model_max_length": tokenizer.model_max_length, "tokens": tokens}))
else:
    print(json.dumps(logits))
