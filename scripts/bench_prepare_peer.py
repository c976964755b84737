#!/usr/bin/env python
"""The peer of `pretune bench prepare`: the same corpus tokenized the way a `datasets` user
prepares pre-training data, `load_dataset("text")` then `Dataset.map(batched=True,
num_proc=N)` with the same fast tokenizer (no special tokens: pretune's prepared ids have
none either), into a fresh Arrow cache. Prints one JSON line.

    .venv/bin/python scripts/bench_prepare_peer.py CORPUS TOKENIZER_JSON --num-proc 2
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("tokenizer")
    ap.add_argument("--num-proc", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1000)
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="peer-datasets-")
    os.environ["HF_DATASETS_CACHE"] = cache
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets  # noqa: E402  (after the cache variable)
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer)
    t0 = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=args.corpus, split="train", cache_dir=cache)
    ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True, num_proc=args.num_proc)
    t1 = time.perf_counter()

    def encode(batch):
        return {"input_ids": tok([t.strip() for t in batch["text"]], add_special_tokens=False)["input_ids"]}

    out = ds.map(encode, batched=True, batch_size=args.batch_size, num_proc=args.num_proc, remove_columns=["text"])
    t2 = time.perf_counter()
    import pyarrow.compute as pc
    tokens = int(pc.sum(pc.list_value_length(out.data.column("input_ids"))).as_py())
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs)
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps({
        "bench": "prepare-peer", "num_proc": args.num_proc, "sentences": len(out), "tokens": tokens,
        "seconds_load": round(t1 - t0, 4), "seconds_map": round(t2 - t1, 4), "seconds": round(t2 - t0, 4),
        "tokens_per_s": round(tokens / (t2 - t0)), "tokens_per_s_map_only": round(tokens / (t2 - t1)),
        "arrow_cache_mb": round(size / 1e6, 1), "peak_rss_mb": round(self_rss, 1), "children_peak_rss_mb": round(child_rss, 1),
        "versions": {"datasets": datasets.__version__, "python": sys.version.split()[0]},
    }))


if __name__ == "__main__":
    main()
