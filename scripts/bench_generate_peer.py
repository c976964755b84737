#!/usr/bin/env python3
"""The peer of `pretune bench generate`: transformers' generate() on a randomly initialised
GPT2LMHeadModel with the tiny GLM's sizes (2 layers, width 128, 2 heads, FFN 512, 8,004
tokens), random prompts of --seq tokens, --steps new tokens per row (min_new_tokens =
max_new_tokens, so every row decodes the same number), --batch rows, --beams beams, with or
without the key / value cache. One untimed warm-up call, then whole calls repeated for --seconds; one JSON line.
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=1)
p.add_argument("--seq", type=int, default=64)
p.add_argument("--steps", type=int, default=32)
p.add_argument("--beams", type=int, default=1)
p.add_argument("--no-kv-cache", action="store_true")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--seconds", type=float, default=2.0, help="repeat the timed call until this much time has passed")
a = p.parse_args()

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
vocab = 8004
cfg = GPT2Config(vocab_size=vocab, n_embd=128, n_layer=2, n_head=2, n_inner=512, n_positions=a.seq + a.steps + 2,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=5, eos_token_id=6, pad_token_id=0,
                 attn_implementation="sdpa")
model = GPT2LMHeadModel(cfg).eval()
prompts = torch.randint(10, vocab, (a.batch, a.seq))
mask = torch.ones_like(prompts)


def run(n):
    with torch.inference_mode():
        return model.generate(prompts, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, num_beams=a.beams,
                              do_sample=False, use_cache=not a.no_kv_cache, pad_token_id=0, eos_token_id=6)


run(2)
t0 = time.perf_counter()
tokens = calls = 0
while calls == 0 or time.perf_counter() - t0 < a.seconds:
    out = run(a.steps)
    tokens += a.batch * (out.shape[1] - a.seq)
    calls += 1
seconds = time.perf_counter() - t0
print(json.dumps({"workload": "generate", "side": "transformers", "batch": a.batch, "prompt": a.seq, "new_tokens": a.steps, "beams": a.beams,
                  "kv_cache": not a.no_kv_cache, "threads": a.threads, "seconds": seconds, "calls": calls, "tokens": tokens, "tokens_per_s": tokens / seconds,
                  "torch": torch.__version__}))
