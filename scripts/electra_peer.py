"""The peer of `pretune bench pretrain --objective electra`: a plain PyTorch loop on
`transformers`' ELECTRA pair of the same shape: ElectraForPreTraining (the `--model` depth,
width, heads and feed-forward width) and an ElectraForMaskedLM generator a quarter as wide (at
least one head of the discriminator's head width), the two sharing one embeddings module, as
google-research/electra ties them. Per update: the generator's MLM loss on rows with 15 % of
the corpus tokens masked 80/10/10 (masked before timing), a sample from its softmax at every
masked position (no gradient), the discriminator's loss on the input with the samples in
place (replaced = differs from the original), loss = MLM + 50 x RTD; AdamW lr 1e-4, weight
decay 0.01, clipping at 1.0, fp32 (or bf16 autocast), `threads` intra-op threads. Rows of
`seq` tokens ([CLS] + a packed stretch of the corpus + [SEP], no padding). One JSON line.

    .venv/bin/python scripts/electra_peer.py --tokenizer T --corpus C
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modernbert_mlm_peer import SHAPES, mask, parser, rows  # noqa: E402

FFN = {"mini": 1024, "base": 3072, "large": 4096}


def main():
    a = parser(__doc__).parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = Tokenizer.from_file(a.tokenizer)
    vocab = tok.get_vocab_size()
    layers, hidden, heads = SHAPES[a.model]
    head_dim = hidden // heads
    gen_hidden = max(1, round(hidden / 4 / head_dim)) * head_dim
    common = dict(vocab_size=vocab, embedding_size=hidden, num_hidden_layers=layers, max_position_embeddings=512,
                  pad_token_id=tok.token_to_id("[PAD]"))
    disc = ElectraForPreTraining(ElectraConfig(**common, hidden_size=hidden, num_attention_heads=heads, intermediate_size=FFN[a.model]))
    gen = ElectraForMaskedLM(ElectraConfig(**common, hidden_size=gen_hidden, num_attention_heads=gen_hidden // head_dim,
                                           intermediate_size=FFN[a.model] * gen_hidden // hidden))
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    disc.train()
    gen.train()
    params = list({id(q): q for q in list(disc.parameters()) + list(gen.parameters())}.values())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    total = a.warmup + a.steps
    data = rows(tok, a.corpus, total * a.batch, a.seq)
    g = torch.Generator().manual_seed(0)
    batches = [(data[i * a.batch:(i + 1) * a.batch],) + mask(data[i * a.batch:(i + 1) * a.batch], tok, vocab, g, p=0.15) for i in range(total)]
    attention = torch.ones(a.batch, a.seq, dtype=torch.long)
    times, losses = [], []
    for i, (orig, x, y) in enumerate(batches):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            g_out = gen(input_ids=x, attention_mask=attention, labels=y)
            masked = y != -100
            with torch.no_grad():
                sampled = torch.multinomial(g_out.logits[masked].float().softmax(-1), 1).squeeze(1)
            replaced = x.clone()
            replaced[masked] = sampled
            d_out = disc(input_ids=replaced, attention_mask=attention, labels=(replaced != orig).long())
            loss = g_out.loss + 50.0 * d_out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"bench": "pretrain", "side": "transformers", "model": f"ElectraForPreTraining + ElectraForMaskedLM ({a.model}, generator {gen_hidden})",
                      "threads": a.threads, "bf16": a.bf16, "batch": a.batch, "seq": a.seq, "steps": len(times),
                      "s_per_step_median": round(float(np.median(times)), 4), "tokens_per_s": round(len(times) * a.batch * a.seq / sum(times)),
                      "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)], "torch": torch.__version__,
                      "params": sum(q.numel() for q in params),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
