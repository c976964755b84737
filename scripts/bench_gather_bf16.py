#!/usr/bin/env python3
"""The bf16 row gather on the CPU, forward + backward, as the unpadded encoder and the MLM
decoder use it (`model::gather_rows`): `index_select` on bf16 rows against casting the rows to
fp32 first. Shapes of BERT-mini at batch 32 x 128 (3,800 real tokens of 4,096, hidden 256) and
of the scored positions (600 of 4,096). Prints one JSON line; libtorch's kernels, so the
numbers hold for pretune's calls through tch too.

  .venv/bin/python scripts/bench_gather_bf16.py [--threads 2] [--repeats 20]
"""
import argparse
import json
import time

import torch


def timed(fn, repeats):
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = {"bench": "gather_bf16", "threads": a.threads, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cases": []}
    for rows, keep, hidden in [(4096, 3800, 256), (4096, 600, 256)]:
        idx = torch.randperm(rows)[:keep].sort().values
        x = torch.randn(rows, hidden, dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn(keep, hidden, dtype=torch.bfloat16)

        def bf16_gather():
            x.grad = None
            x.index_select(0, idx).backward(g)

        def fp32_gather():
            x.grad = None
            x.float().index_select(0, idx).backward(g.float())

        out["cases"].append({"rows": rows, "gathered": keep, "hidden": hidden,
                             "bf16_index_select_ms": round(timed(bf16_gather, a.repeats), 3),
                             "via_fp32_ms": round(timed(fp32_gather, a.repeats), 3)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
