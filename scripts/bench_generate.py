#!/usr/bin/env python3
"""Decoding speed side by side: `pretune bench generate` (GLM blank filling, the tiny GLM's
sizes) against `scripts/bench_generate_peer.py` (transformers' generate() on a GPT-2 of the
same sizes), greedy and 4 beams, batch 1 and 16, with and without the key / value cache;
alternating rounds, medians, ratios. Raw JSON lines and the table go to --out.

    scripts/bench-generate.sh [--rounds 3] [--steps 32] [--seq 64]
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def one(cmd):
    cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if cp.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{cp.stderr[-2000:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretune", default=str(ROOT / "target/release/pretune"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=32, help="new tokens per row")
    p.add_argument("--seq", type=int, default=64, help="prompt tokens")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement (whole calls)")
    p.add_argument("--out", default=str(ROOT / "bench-results/generate"))
    a = p.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = open(out / "raw.jsonl", "w")
    rows = []
    for batch in (1, 16):
        for beams in (1, 4):
            for cache in (True, False):
                common = ["--batch", batch, "--seq", a.seq, "--steps", a.steps, "--beams", beams, "--threads", a.threads, "--seconds", a.seconds] + ([] if cache else ["--no-kv-cache"])
                ours, theirs = [], []
                for r in range(a.rounds):
                    sides = [("pretune", [a.pretune, "bench", "generate", *common]), ("peer", [sys.executable, ROOT / "scripts/bench_generate_peer.py", *common])]
                    for side, cmd in (sides if r % 2 == 0 else sides[::-1]):
                        v = one(cmd)
                        v["round"] = r
                        raw.write(json.dumps(v) + "\n")
                        (ours if side == "pretune" else theirs).append(v["tokens_per_s"])
                o, t = statistics.median(ours), statistics.median(theirs)
                per = ", ".join(f"{x / y:.2f}" for x, y in zip(ours, theirs))
                rows.append(f"| {batch} | {'greedy' if beams == 1 else f'{beams} beams'} | {'yes' if cache else 'no'} | {o:,.0f} | {t:,.0f} | **{o / t:.2f}×** ({per}) |")
                print(rows[-1], file=sys.stderr, flush=True)
    table = ["| batch | search | cache | pretune new tokens/s | transformers new tokens/s | ours / theirs (per round) |", "|---|---|---|---|---|---|", *rows]
    (out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
