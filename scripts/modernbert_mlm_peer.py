"""The peer of `pretune bench pretrain --objective modernbert-mlm`: a plain PyTorch loop on
`transformers`' ModernBertForMaskedLM of the same shape (the `--model` sizes, GeGLU of 1.5 x
the width, global attention every third layer, a window of 64 on each side elsewhere, no
dropout), on the same corpus and tokenizer: rows of `seq` tokens ([CLS] + a packed stretch of
the corpus + [SEP], no padding), 30 % of the corpus tokens masked 80/10/10 before timing,
AdamW lr 1e-4, weight decay 0.01, gradient clipping at 1.0, `threads` intra-op threads, fp32
(or bf16 autocast). `--sparse` turns on `sparse_prediction` (the MLM head on masked tokens
only, as pretune's head runs; off is `transformers`' default). One JSON line on stdout.

    .venv/bin/python scripts/modernbert_mlm_peer.py --tokenizer T --corpus C [--sparse]
"""
import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import ModernBertConfig, ModernBertForMaskedLM

SHAPES = {"mini": (4, 256, 4), "base": (12, 768, 12), "large": (24, 1024, 16)}


def rows(tok, corpus, n_rows, seq):
    """`n_rows` rows of [CLS] + seq - 2 corpus tokens + [SEP]."""
    need = n_rows * (seq - 2)
    ids = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                ids.extend(tok.encode(line.strip(), add_special_tokens=False).ids)
                if len(ids) >= need:
                    break
    assert len(ids) >= need, f"the corpus has {len(ids)} tokens, {need} needed"
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    body = torch.tensor(ids[:need]).view(n_rows, seq - 2)
    return torch.cat([torch.full((n_rows, 1), cls), body, torch.full((n_rows, 1), sep)], 1)


def mask(x, tok, vocab, gen, p=0.3):
    """80 % [MASK], 10 % a random token, 10 % kept, of `p` of the non-special positions;
    returns the masked rows and the labels (the original at chosen positions, -100 elsewhere)."""
    labels = x.clone()
    chosen = torch.rand(x.shape, generator=gen) < p
    chosen[:, 0] = chosen[:, -1] = False
    labels[~chosen] = -100
    x = x.clone()
    r = torch.rand(x.shape, generator=gen)
    x[chosen & (r < 0.8)] = tok.token_to_id("[MASK]")
    rand = chosen & (r >= 0.8) & (r < 0.9)
    x[rand] = torch.randint(vocab, (int(rand.sum()),), generator=gen)
    return x, labels


def parser(doc):
    """The options both pre-training peers take (this one and scripts/electra_peer.py)."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--model", default="mini", choices=SHAPES)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    return p


def main():
    p = parser(__doc__)
    p.add_argument("--sparse", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = Tokenizer.from_file(a.tokenizer)
    vocab = tok.get_vocab_size()
    layers, hidden, heads = SHAPES[a.model]
    cfg = ModernBertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=hidden * 3 // 2, local_attention=128, global_attn_every_n_layers=3,
                           max_position_embeddings=512, pad_token_id=tok.token_to_id("[PAD]"), cls_token_id=tok.token_to_id("[CLS]"),
                           sep_token_id=tok.token_to_id("[SEP]"), bos_token_id=tok.token_to_id("[CLS]"), eos_token_id=tok.token_to_id("[SEP]"),
                           sparse_prediction=a.sparse, attn_implementation="sdpa")
    model = ModernBertForMaskedLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    total = a.warmup + a.steps
    data = rows(tok, a.corpus, total * a.batch, a.seq)
    gen = torch.Generator().manual_seed(0)
    batches = [mask(data[i * a.batch:(i + 1) * a.batch], tok, vocab, gen) for i in range(total)]
    attention = torch.ones(a.batch, a.seq, dtype=torch.long)
    times, losses = [], []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            out = model(input_ids=x, attention_mask=attention, labels=y)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"bench": "pretrain", "side": "transformers", "model": f"ModernBertForMaskedLM ({a.model})", "sparse_prediction": a.sparse,
                      "attn_implementation": model.config._attn_implementation, "threads": a.threads, "bf16": a.bf16,
                      "batch": a.batch, "seq": a.seq, "steps": len(times), "s_per_step_median": round(float(np.median(times)), 4),
                      "tokens_per_s": round(len(times) * a.batch * a.seq / sum(times)),
                      "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)], "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters()),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
