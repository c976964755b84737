#!/usr/bin/env python3
"""pretune against the PyTorch + transformers baseline (../shared/bench), side by side.

Runs each workload of both in turn, alternating which side goes first each round (A B, B A,
...), for --rounds rounds, on the same corpus, vocabulary, shapes and thread count. Keeps every
JSON line under OUT/raw/, prints (and writes OUT/results.md) medians per side and the ratios
ours / baseline, since these machines are noisy: compare medians of one run, never numbers
from different runs. Also runs the memory workloads (peak RSS of pre-training; the data plane
over the corpus repeated 1x and 10x) once.

Usage (scripts/bench-side-by-side.sh does the set-up first):
  bench_side_by_side.py --pretune target/release/pretune --py .venv/bin/python --rounds 3
stdlib only.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time


def run_json(cmd, env=None, log=None):
    """Runs a command that prints one JSON line last; returns it parsed (or an error dict)."""
    t0 = time.time()
    e = dict(os.environ)
    e.update(env or {})
    cp = subprocess.run(cmd, env=e, capture_output=True, text=True)
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}  ({time.time() - t0:.1f} s, rc {cp.returncode})\n{cp.stderr[-3000:]}\n")
    lines = [l for l in cp.stdout.splitlines() if l.startswith("{")]
    if cp.returncode != 0 or not lines:
        print(f"FAILED: {' '.join(cmd)}\n{cp.stderr[-2000:]}", file=sys.stderr)
        return {"error": cp.stderr[-2000:], "cmd": cmd}
    return json.loads(lines[-1])


def by_variant(d):
    return {r.get("variant"): r for r in d.get("results", []) if "error" not in r}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretune", default="target/release/pretune")
    p.add_argument("--py", default=".venv/bin/python")
    p.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", "../shared/bench"))
    p.add_argument("--data", default=os.environ.get("BENCH_DATA", ".bench-data"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed training steps per run (both sides)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mask-seconds", type=float, default=2.0)
    p.add_argument("--only", default="", help="comma list: mask,tokenize,pretrain,finetune,qa,memory")
    p.add_argument("--out", default="")
    p.add_argument("--bf16", action="store_true", help="both sides in bf16: the baseline's --bf16 (CPU autocast, Trainer bf16=True), "
                   "pretune's --precision bf16; compare only within one precision")
    a = p.parse_args()

    corpus = os.path.join(a.data, "corpus.txt")
    cache = os.path.join(a.data, "cache")
    sys.path.insert(0, a.bench_dir)
    only = set(filter(None, a.only.split(",")))
    want = lambda w: not only or w in only  # noqa: E731
    # Every workload but QA (which starts from MiniLM and its own tokenizer) needs the
    # baseline's corpus and cached vocabulary.
    tokdir = [d for d in os.listdir(cache) if d.startswith("wordpiece-16000-")] if os.path.isdir(cache) else []
    if not tokdir and only != {"qa"}:
        sys.exit(f"no cached vocabulary under {cache}: run scripts/bench-side-by-side.sh (it builds it)")
    tokenizer = os.path.join(cache, tokdir[0], "tokenizer.json") if tokdir else ""
    out = a.out or os.path.join(a.data, "side-by-side", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(os.path.join(out, "raw"), exist_ok=True)
    log = os.path.join(out, "commands.log")

    B = lambda script: [a.py, os.path.join(a.bench_dir, script), "--corpus", corpus, "--cache-dir", cache]  # noqa: E731
    ours = lambda *args: [a.pretune, "bench", *args, "--corpus", corpus, "--tokenizer", tokenizer, "--out", os.path.join(out, "runs")]  # noqa: E731
    steps = ["--warmup", str(a.warmup), "--steps", str(a.steps)]
    # Training workloads state their precision on both sides (pretune's bench defaults to fp32).
    bprec = ["--bf16"] if a.bf16 else []
    oprec = ["--precision", "bf16" if a.bf16 else "fp32"]
    hf_env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    # (name, baseline command + env, our commands [(label, cmd, env)])
    pairs = []
    if want("mask"):
        pairs.append(("mask", (B("bench_mask.py") + ["--seconds", str(a.mask_seconds)], hf_env),
                      [("mask", ours("mask", "--seconds", str(a.mask_seconds)), {})]))
    if want("tokenize"):
        pairs.append(("tokenize", (B("bench_tokenize.py") + ["--repeats", "2", "--variants", "raw_rayon1,raw_rayon2,hf_call_rayon2"], hf_env),
                      [("tokenize_rayon1", ours("tokenize"), {"RAYON_NUM_THREADS": "1"}),
                       ("tokenize_rayon2", ours("tokenize"), {"RAYON_NUM_THREADS": "2"})]))
    if want("pretrain"):
        pairs.append(("train_mlm", (B("bench_train_mlm.py") + steps + bprec + ["--variants", "pretraining_precollated,mlm_precollated,pretraining_loader_w0"], hf_env),
                      [("pretrain_mlm_nsp", ours("pretrain", "--objective", "mlm-nsp", *steps, *oprec), {}),
                       ("pretrain_mlm", ours("pretrain", "--objective", "mlm", *steps, *oprec), {}),
                       ("pretrain_mlm_nsp_2maskers", ours("pretrain", "--objective", "mlm-nsp", "--workers", "2", *steps, *oprec), {})]))
        pairs.append(("trainer", (B("bench_trainer.py") + steps + bprec + ["--variants", "trainer_pretraining_w0"], hf_env), []))
    if want("finetune"):
        pairs.append(("finetune_cls", (B("bench_finetune_cls.py") + ["--warmup", "3", "--steps", str(a.steps + 4), "--variants", "seqcls"] + bprec, hf_env),
                      [("finetune", ours("finetune", "--warmup", "3", "--steps", str(a.steps + 4), *oprec), {}),
                       ("finetune_grouped", ours("finetune", "--group-by-length", "--warmup", "3", "--steps", str(a.steps + 4), *oprec), {})]))
    if want("qa"):
        # Extractive QA from the pre-trained MiniLM on SQuAD windows (the CPU override of
        # configs/finetune-qa-minilm.toml): scripts/qa_peer.py --bench is the plain loop.
        qa = ["--batch", "16", "--seq", "256"]
        qa_steps = ["--warmup", "2", "--steps", str(a.steps)]
        pairs.append(("finetune_qa", ([a.py, "scripts/qa_peer.py", "--bench", "--threads", "2", *qa, "--stride", "96", *qa_steps, *bprec], hf_env),
                      [("finetune_qa", [a.pretune, "bench", "finetune", "--task", "qa", *qa, "--doc-stride", "96", *qa_steps, *oprec,
                                        "--out", os.path.join(out, "runs")], {})]))

    results = {}  # key -> list of per-round JSON

    def record(key, d):
        results.setdefault(key, []).append(d)
        with open(os.path.join(out, "raw", f"{key}.jsonl"), "a") as f:
            f.write(json.dumps(d) + "\n")

    for r in range(a.rounds):
        for name, (bcmd, benv), mine in pairs:
            sides = [("base", None)] + [("ours", m) for m in mine]
            if r % 2 == 1:
                sides.reverse()
            for side, m in sides:
                if side == "base":
                    print(f"[round {r + 1}] baseline {name}", file=sys.stderr, flush=True)
                    record(f"base_{name}", run_json(bcmd, benv, log))
                else:
                    label, cmd, env = m
                    print(f"[round {r + 1}] pretune {label}", file=sys.stderr, flush=True)
                    record(f"ours_{label}", run_json(cmd, env, log))

    if want("memory"):
        for scale in (1, 10):
            print(f"[memory] pretune stream x{scale}", file=sys.stderr, flush=True)
            record(f"ours_stream_x{scale}", run_json(ours("stream", "--scale", str(scale)), {}, log))
        print("[memory] pretune pretrain on the corpus x10", file=sys.stderr, flush=True)
        record("ours_pretrain_mlm_nsp_x10", run_json(ours("pretrain", "--objective", "mlm-nsp", "--scale", "10", *steps, *oprec), {}, log))

    report = render(results, a)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(report)
    print(report)
    print(f"raw JSON: {out}/raw/", file=sys.stderr)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def render(results, a):
    """Markdown: one row per comparison, medians over rounds, ratio = ours / baseline."""
    def series(key, pick):
        out = []
        for d in results.get(key, []):
            try:
                out.append(pick(d))
            except (KeyError, TypeError, IndexError):
                out.append(None)
        return out

    def variant(name, field):
        return lambda d: by_variant(d)[name][field]

    def top(field):
        return lambda d: d[field]

    def rss(name):
        return lambda d: by_variant(d)[name]["peak_rss_mb"]

    rows = []

    def row(what, unit, ours_key, ours_pick, base_key, base_pick, target=None, lower_is_better=False):
        o, b = series(ours_key, ours_pick), series(base_key, base_pick)
        mo, mb = med(o), med(b)
        ratio = (mo / mb) if (mo is not None and mb) else None
        per_round = [x / y for x, y in zip(o, b) if x is not None and y]
        spread = f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else "–"
        verdict = ""
        if target is not None and ratio is not None:
            ok = ratio <= target if lower_is_better else ratio >= target
            verdict = ("met" if ok else "missed") + f" ({'≤' if lower_is_better else '≥'} {target}×)"
        fmt = lambda x: "–" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3f}")  # noqa: E731
        rows.append(f"| {what} | {unit} | {fmt(mo)} | {fmt(mb)} | **{ratio:.2f}×** | {spread} | {verdict} |" if ratio is not None
                    else f"| {what} | {unit} | {fmt(mo)} | {fmt(mb)} | – | – | |")

    cores = 1  # masking runs on one thread on both sides
    row("masking, token-level 80/10/10, vs collator with special_tokens_mask (docs' layout)", "seq/s/core",
        "ours_mask", variant("mlm_bernoulli", "sequences_per_s"), "base_mask", variant("mlm_dict_with_stm", "sequences_per_s"), 20)
    row("masking, vs collator's fastest layout (list of lists)", "seq/s/core",
        "ours_mask", variant("mlm_bernoulli", "sequences_per_s"), "base_mask", variant("mlm_list_of_lists", "sequences_per_s"), 20)
    row("whole-word masking", "seq/s/core", "ours_mask", variant("mlm_wwm", "sequences_per_s"), "base_mask", variant("mlm_wwm", "sequences_per_s"), 20)
    row("NSP pairs: pad + mask", "seq/s/core", "ours_mask", variant("nsp_pairs", "sequences_per_s"), "base_mask", variant("nsp_pairs_collate", "sequences_per_s"), 20)
    row("masking vs the torch-only 80/10/10 floor", "seq/s/core", "ours_mask", variant("mlm_bernoulli", "sequences_per_s"), "base_mask", variant("torch_only_mask", "sequences_per_s"))
    row("tokenization, encode_batch, 1 thread", "tokens/s", "ours_tokenize_rayon1", variant("encode_batch", "tokens_per_s"), "base_tokenize", variant("raw_rayon1", "tokens_per_s"))
    row("tokenization, encode_batch, 2 threads", "tokens/s", "ours_tokenize_rayon2", variant("encode_batch", "tokens_per_s"), "base_tokenize", variant("raw_rayon2", "tokens_per_s"))
    row("tokenization, Loader path (word starts) 1 thread vs transformers call 2 threads", "tokens/s", "ours_tokenize_rayon1", variant("loader_encode_with_word_starts", "tokens_per_s"), "base_tokenize", variant("hf_call_rayon2", "tokens_per_s"))
    row("MLM+NSP pre-training vs HF Trainer", "tokens/s", "ours_pretrain_mlm_nsp", top("tokens_per_s"), "base_trainer", variant("trainer_pretraining_w0", "tokens_per_s"), 2.5)
    row("MLM+NSP pre-training vs plain loop + DataLoader + collator", "tokens/s", "ours_pretrain_mlm_nsp", top("tokens_per_s"), "base_train_mlm", variant("pretraining_loader_w0", "tokens_per_s"))
    row("MLM+NSP pre-training vs plain loop, pre-masked batches", "tokens/s", "ours_pretrain_mlm_nsp", top("tokens_per_s"), "base_train_mlm", variant("pretraining_precollated", "tokens_per_s"))
    row("MLM+NSP pre-training with 2 Masker workers (thread budget) vs 1", "tokens/s", "ours_pretrain_mlm_nsp_2maskers", top("tokens_per_s"), "ours_pretrain_mlm_nsp", top("tokens_per_s"))
    row("MLM pre-training vs plain loop, pre-masked batches", "tokens/s", "ours_pretrain_mlm", top("tokens_per_s"), "base_train_mlm", variant("mlm_precollated", "tokens_per_s"))
    row("sequence-classification fine-tuning vs plain loop", "tokens/s", "ours_finetune", top("tokens_per_s"), "base_finetune_cls", variant("seqcls", "tokens_per_s"), 1.3)
    row("fine-tuning with group_by_length vs plain loop (fixed 128 padding)", "tokens/s", "ours_finetune_grouped", top("tokens_per_s"), "base_finetune_cls", variant("seqcls", "tokens_per_s"), 1.3)
    row("fine-tuning, non-padding tokens/s, grouped vs plain loop", "tokens/s", "ours_finetune_grouped", lambda d: d["timing"]["real_tokens_per_s"], "base_finetune_cls", lambda d: by_variant(d)["seqcls"]["tokens_per_s"] * by_variant(d)["seqcls"]["mean_nonpad_tokens_per_seq"] / 128)
    row("QA fine-tuning (MiniLM from its pre-trained weights, SQuAD windows of 256, batch 16), batch × 256 tokens/s", "tokens/s",
        "ours_finetune_qa", top("tokens_per_s"), "base_finetune_qa", top("tokens_per_s"))
    row("QA fine-tuning, non-padding tokens/s (ours pad to the batch's longest window, run_qa.py to 256)", "tokens/s", "ours_finetune_qa", lambda d: d["timing"]["real_tokens_per_s"], "base_finetune_qa", top("real_tokens_per_s"))
    row("peak RSS, MLM+NSP pre-training vs plain loop + DataLoader", "MB", "ours_pretrain_mlm_nsp", top("peak_rss_mb"), "base_train_mlm", rss("pretraining_loader_w0"), 0.5, True)
    row("peak RSS, MLM+NSP pre-training vs HF Trainer", "MB", "ours_pretrain_mlm_nsp", top("peak_rss_mb"), "base_trainer", rss("trainer_pretraining_w0"), 0.5, True)
    row("peak RSS, fine-tuning", "MB", "ours_finetune", top("peak_rss_mb"), "base_finetune_cls", rss("seqcls"), 0.5, True)
    row("peak RSS, QA fine-tuning", "MB", "ours_finetune_qa", top("peak_rss_mb"), "base_finetune_qa", top("peak_rss_mb"), None, True)

    lines = ["| workload | unit | pretune (median) | baseline (median) | ours / baseline | per-round range | target |",
             "|---|---|---|---|---|---|---|"] + rows
    extra = []
    dw = series("ours_pretrain_mlm_nsp", lambda d: d["timing"]["data_wait_share"])
    dw_mlm = series("ours_pretrain_mlm", lambda d: d["timing"]["data_wait_share"])
    if dw:
        extra.append(f"- Data wait, share of timed step time (target < 1 %): MLM+NSP median {100 * med(dw):.2f} %, MLM median {100 * (med(dw_mlm) or 0):.2f} %.")
    busy = []
    for k, v in results.items():
        for d in v:
            if "cpu" in d:
                busy.append((k, d["cpu"].get("others_busy_frac")))
            for r in d.get("results", []):
                if isinstance(r, dict) and "cpu" in r:
                    busy.append((k, r["cpu"].get("others_busy_frac")))
    b = [x for _, x in busy if x is not None]
    if b:
        extra.append(f"- CPU taken by other processes during measurements (`others_busy_frac`): median {med(b):.3f}, max {max(b):.3f} (want < 0.05).")
    for s in (1, 10):
        d = (results.get(f"ours_stream_x{s}") or [None])[0]
        if d and "error" not in d:
            extra.append(f"- Data plane over one epoch of the corpus x{s} ({d['corpus_mb']} MB, {d['sequences']:,} NSP sequences, {d['sequences_per_s']:,.0f} seq/s): peak RSS {d['peak_rss_mb']:.0f} MB.")
    d = (results.get("ours_pretrain_mlm_nsp_x10") or [None])[0]
    if d and "error" not in d:
        extra.append(f"- MLM+NSP pre-training on the corpus x10: peak RSS {d['peak_rss_mb']:.0f} MB, {d['tokens_per_s']:,.0f} tokens/s.")
    cpu = next((d.get("cpu_model") for v in results.values() for d in v if d.get("cpu_model")), "")
    units = next((d.get("bf16_units") for v in results.values() for d in v if d.get("bf16_units")), "")
    head = f"Precision: {'bf16 (autocast) on both sides' if a.bf16 else 'fp32 on both sides'}. CPU: {cpu or 'unknown'} ({units or 'bf16 units unknown'}).\n"
    head += f"Rounds: {a.rounds}, timed steps per training run: {a.steps} (warm-up {a.warmup}); ratios are medians of pretune over medians of the baseline.\n\n"
    return head + "\n".join(lines) + "\n\n" + "\n".join(extra) + "\n"


if __name__ == "__main__":
    main()
