"""The peer for question answering: `transformers`' BertForQuestionAnswering fine-tuned in a
plain PyTorch loop the way examples/pytorch/question-answering/run_qa.py prepares and scores
SQuAD, on the same starting weights (all-MiniLM-L6-v2, .cache/minilm/model), subset, windows,
steps, seed and hyper-parameters as `pretune train configs/finetune-qa-minilm.toml` with the
CPU override. Two modes, each printing one JSON line:

* `--bench`: `--warmup` untimed then `--steps` timed training steps (tokens/s), the
  counterpart of `pretune bench finetune --task qa` (scripts/bench_side_by_side.py runs both);
* default: train `--steps` updates, then exact match / F1 on the dev set (all of it unless
  `--max-eval`), with run_qa.py's post-processing and transformers 4.57.1's squad_metrics
  (.cache/oracle/, extracted by the set-up).

    .venv/bin/python scripts/qa_peer.py --train-examples 4000 --steps 250 --batch 16 \
        --seq 256 --stride 96 --lr 5e-5 --out bench-results/qa-peer.json

Preparation as run_qa.py: question left-stripped, `truncation="only_second"`, windows of
`--seq` tokens overlapping by `--stride`, padded to `--seq` (`pad_to_max_length`, its
default), answers outside a window labelled at [CLS]. Optimisation as the Trainer: AdamW
(no decay on biases and LayerNorm weights), linear warm-up over 10 % then linear decay,
gradient clipping at 1.0, the windows shuffled each epoch by a seeded generator.
"""
import argparse
import collections
import json
import math
import os
import pathlib
import resource
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_qa_fixture import oracle_metrics  # noqa: E402


def squad_records(path, limit):
    """SQuAD JSON in file order: (id, question, context, texts, starts)."""
    out = []
    for article in json.loads(pathlib.Path(path).read_text())["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append((qa["id"], qa["question"], para["context"], [a["text"] for a in qa["answers"]], [a["answer_start"] for a in qa["answers"]]))
    return out[:limit] if limit else out


def encode(tok, recs, seq, stride):
    """run_qa.py's prepare_train_features / prepare_validation_features in one pass."""
    enc = tok([r[1].lstrip() for r in recs], [r[2] for r in recs], truncation="only_second", max_length=seq, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True,
              return_attention_mask=True, padding="max_length")
    feats = []
    for w, ex in enumerate(enc["overflow_to_sample_mapping"]):
        ids, offsets, seqids = enc["input_ids"][w], enc["offset_mapping"][w], enc.sequence_ids(w)
        _, _, ctx, texts, starts = recs[ex]
        sc, ec = starts[0], starts[0] + len(texts[0])
        s = 0
        while seqids[s] != 1:
            s += 1
        e = len(ids) - 1
        while seqids[e] != 1:
            e -= 1
        if not (offsets[s][0] <= sc and offsets[e][1] >= ec):
            start = end = 0
        else:
            while s < len(offsets) and offsets[s][0] <= sc:
                s += 1
            start = s - 1
            while offsets[e][1] >= ec:
                e -= 1
            end = e + 1
        feats.append({"example": ex, "input_ids": ids, "token_type_ids": enc["token_type_ids"][w], "attention_mask": enc["attention_mask"][w],
                      "offsets": [o if seqids[k] == 1 else None for k, o in enumerate(offsets)], "start": start, "end": end})
    return feats


def tensors(feats, keys=("input_ids", "token_type_ids", "attention_mask")):
    return {k: torch.tensor([f[k] for f in feats]) for k in keys}


def postprocess(recs, feats, starts, ends, n_best, max_answer):
    """utils_qa.postprocess_qa_predictions, version_2_with_negative=False."""
    by = collections.defaultdict(list)
    for k, f in enumerate(feats):
        by[f["example"]].append(k)
    preds = {}
    for i, r in enumerate(recs):
        prelim = []
        for k in by[i]:
            sl, el, off = starts[k], ends[k], feats[k]["offsets"]
            for a in np.argsort(sl)[-1:-n_best - 1:-1].tolist():
                for b in np.argsort(el)[-1:-n_best - 1:-1].tolist():
                    if a >= len(off) or b >= len(off) or off[a] is None or off[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer:
                        continue
                    prelim.append((float(sl[a] + el[b]), off[a][0], off[b][1]))
        best = max(prelim, key=lambda x: x[0]) if prelim else None
        preds[r[0]] = r[2][best[1]:best[2]] if best else ""
    return preds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / ".cache/minilm/model"))
    p.add_argument("--train", default=str(ROOT / ".cache/squad/train-v1.1.json"))
    p.add_argument("--dev", default=str(ROOT / ".cache/squad/dev-v1.1.json"))
    p.add_argument("--train-examples", type=int, default=4000)
    p.add_argument("--max-eval", type=int, default=0, help="dev questions to score (0: all)")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--warmup", type=int, default=2, help="--bench: untimed steps first")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--stride", type=int, default=96)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon (pretune's train.eps default)")
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer", type=int, default=30)
    p.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", os.cpu_count() or 1)))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU (fp32 weights and AdamW), as the baseline's --bf16")
    p.add_argument("--out", default="")
    a = p.parse_args()

    from transformers import AutoModelForQuestionAnswering, PreTrainedTokenizerFast
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    # The folder's own class (BertForQuestionAnswering for MiniLM; RobertaFor..., ElectraFor...
    # for scripts/bench-encoders.sh's folders).
    model = AutoModelForQuestionAnswering.from_pretrained(a.model)
    recs = squad_records(a.train, a.train_examples)
    feats = encode(tok, recs, a.seq, a.stride)
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n  # noqa: E731
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": a.weight_decay},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=a.eps)
    total = a.warmup + a.steps if a.bench else a.steps
    warm = 0 if a.bench else math.ceil(a.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    gen = torch.Generator().manual_seed(a.seed)
    order, at = [], 0
    model.train()
    times, losses, real = [], [], 0
    t_train = time.perf_counter()
    for step in range(total):
        if at + a.batch > len(order):
            order, at = torch.randperm(len(feats), generator=gen).tolist(), 0
        batch = [feats[k] for k in order[at:at + a.batch]]
        at += a.batch
        x = tensors(batch)
        if getattr(model.config, "type_vocab_size", 1) == 1:
            x.pop("token_type_ids", None)  # RoBERTa: one token type; ModernBERT: none
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            out = model(**x, start_positions=torch.tensor([f["start"] for f in batch]), end_positions=torch.tensor([f["end"] for f in batch]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if not a.bench or step >= a.warmup:
            times.append(time.perf_counter() - t0)
            real += int(x["attention_mask"].sum())
    train_s = time.perf_counter() - t_train
    res = {"bench": "finetune_qa", "side": "transformers", "model": f"{type(model).__name__} ({a.model})", "threads": a.threads, "bf16": a.bf16,
           "batch": a.batch, "seq": a.seq, "stride": a.stride, "train_questions": len(recs), "train_windows": len(feats),
           "steps": len(times), "seconds": round(sum(times), 3), "s_per_step": round(sum(times) / len(times), 4),
           "s_per_step_median": round(float(np.median(times)), 4),
           "tokens_per_s": round(len(times) * a.batch * a.seq / sum(times)), "real_tokens_per_s": round(real / sum(times)),
           "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)], "torch": torch.__version__,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if not a.bench:
        res.update({"lr": a.lr, "seed": a.seed, "train_seconds": round(train_s, 1)})
        dev = squad_records(a.dev, a.max_eval)
        dfeats = encode(tok, dev, a.seq, a.stride)
        model.eval()
        starts, ends = [], []
        t0 = time.perf_counter()
        with torch.no_grad():
            for k in range(0, len(dfeats), 64):
                x = tensors(dfeats[k:k + 64])
                if getattr(model.config, "type_vocab_size", 1) == 1:
                    x.pop("token_type_ids", None)
                o = model(**x)
                starts.extend(o.start_logits.numpy())
                ends.extend(o.end_logits.numpy())
        preds = postprocess(dev, dfeats, starts, ends, a.n_best, a.max_answer)
        m = oracle_metrics()
        # squad_metrics.get_raw_scores: references that normalise to nothing are dropped.
        gold = [[g for g in r[3] if m["normalize_answer"](g)] or [""] for r in dev]
        em = [max(m["compute_exact"](g, preds[r[0]]) for g in gs) for r, gs in zip(dev, gold)]
        f1 = [max(m["compute_f1"](g, preds[r[0]]) for g in gs) for r, gs in zip(dev, gold)]
        res.update({"eval_questions": len(dev), "eval_windows": len(dfeats), "eval_seconds": round(time.perf_counter() - t0, 1),
                    "exact_match": round(100 * sum(em) / len(em), 2), "f1": round(100 * sum(f1) / len(f1), 2)})
    line = json.dumps(res)
    print(line)
    if a.out:
        pathlib.Path(a.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
