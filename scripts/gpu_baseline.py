#!/usr/bin/env python3
"""The PyTorch + transformers side of scripts/gpu-bench.sh: BertForPreTraining (MLM + NSP) from
a BertConfig, SDPA attention, bf16 autocast, fused AdamW, batches pre-collated with
DataCollatorForLanguageModeling before timing (the baseline's fastest variant). Same corpus,
tokenizer, shapes and FLOP count as `pretune bench pretrain`. Prints one JSON line.
"""
import argparse
import json
import random
import time

import torch
from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

SHAPES = {"mini": (4, 256, 4, 1024), "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096)}


def nsp_examples(tokenizer_file, corpus, seq):
    """The corpus as `seq`-token pairs for BertForPreTraining: `[CLS] A [SEP] B [SEP]` cut at a
    seeded point, a seeded NSP label; with the tokenizer (BERT's special tokens) and the
    generator, which goes on to draw the batches."""
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]")
    lines = [l.strip() for l in open(corpus, encoding="utf-8") if l.strip()]
    ids = [t for row in tok(lines, add_special_tokens=False)["input_ids"] for t in row]
    n, rng, examples = seq - 3, random.Random(0), []
    for i in range(0, len(ids) - n, n):
        w, cut = ids[i:i + n], rng.randint(1, n - 1)
        examples.append({"input_ids": [tok.cls_token_id] + w[:cut] + [tok.sep_token_id] + w[cut:] + [tok.sep_token_id],
                         "token_type_ids": [0] * (cut + 2) + [1] * (n - cut + 1), "next_sentence_label": rng.randint(0, 1)})
    return tok, examples, rng


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="base", choices=SHAPES)
    p.add_argument("--corpus", default="data/sotu/train.txt")
    p.add_argument("--tokenizer", default="data/sotu/tokenizer.json")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                   help="bf16 autocast (the GPU run) or fp32 (a CPU without bf16 units emulates bf16 ~50x slower)")
    p.add_argument("--peak-tflops", type=float, default=989.4, help="bf16 dense peak (H100/H200 SXM)")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    tok, examples, rng = nsp_examples(a.tokenizer, a.corpus, a.seq)
    coll = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15, pad_to_multiple_of=a.seq)
    total = a.warmup + a.steps
    batches = [{k: v.to(dev, non_blocking=True) for k, v in coll([examples[rng.randrange(len(examples))] for _ in range(a.batch)]).items()}
               for _ in range(total)]
    layers, hidden, heads, ffn = SHAPES[a.model]
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=512, type_vocab_size=2, pad_token_id=tok.pad_token_id,
                     attn_implementation="sdpa")
    model = BertForPreTraining(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=dev.type == "cuda")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(b):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for b in batches[:a.warmup]:
        step(b)
    sync()
    t0 = time.perf_counter()
    for b in batches[a.warmup:]:
        loss = step(b)
    sync()
    dt = (time.perf_counter() - t0) / a.steps
    # Dense-equivalent matmul FLOPs (3 x forward, multiply-add = 2; decoder on every position),
    # the same formula as `pretune bench`.
    t, v = a.batch * a.seq, len(tok)
    fwd = layers * (2 * t * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * a.batch * a.seq * a.seq * hidden)
    fwd += 2 * t * (hidden * hidden + hidden * v) + 2 * a.batch * (hidden * hidden + 2 * hidden)
    flops = 3 * fwd
    print(json.dumps({"side": "transformers", "model": a.model, "precision": a.precision, "batch": a.batch, "seq": a.seq, "s_per_step": round(dt, 5),
                      "tokens_per_s": round(t / dt), "sequences_per_s": round(a.batch / dt, 1),
                      "tflops": round(flops / dt / 1e12, 1), "mfu": round(flops / dt / 1e12 / a.peak_tflops, 4),
                      "loss_last": round(loss.item(), 3), "torch": torch.__version__,
                      "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if dev.type == "cuda" else None}))


if __name__ == "__main__":
    main()
