#!/usr/bin/env python3
"""What pre-training buys, measured: fine-tuning runs on 2 CPU cores, 3 seeds each, summarised
from the runs' own events.jsonl files into docs/pretraining-pays.md.

Rows: the bundled spam set, movie-review polarity, the Chinese review sentiment set; each with
all the training data (a budget of --steps updates) and with 32 labelled examples per class
(drawn per seed). Columns: a classification head on a BERT from random initialisation; on the
tiny BERT pre-trained here (configs/pretrain-mlm-tiny.toml, Chinese: pretrain-mlm-chinese-tiny
with whole-word masking); on all-MiniLM-L6-v2 (English); cloze on the tiny BERT's MLM head;
GLM cloze on the tiny GLM (English spam). Then the learning rate (2e-5, 1e-4, 1e-3 on the tiny
checkpoint) and over-fitting on 32 examples per class (train vs dev accuracy) without and with
early stopping.

    scripts/pretraining-pays.sh            # = this script with the release binary (~30 min)
    scripts/pretraining_pays.py --smoke --pretune target/debug/pretune --out /tmp/pp  # seconds
    scripts/pretraining_pays.py --table-only --out runs/pretraining-pays   # re-render only

The table sits between the markers in docs/pretraining-pays.md; text outside them is kept.
stdlib only.
"""
import argparse
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- table:start -->", "<!-- table:end -->"

ROWS = {
    "spam": {"name": "spam (SpamAssassin, 720 train / 180 dev)", "lang": "en", "dir": ROOT / "data/spam",
             "pattern": "{text} All in all, this message is [MASK].", "verbalizers": {"ham": "personal", "spam": "an offer"}},
    "polarity": {"name": "movie-review polarity (3,200 / 800)", "lang": "en", "dir": ROOT / ".cache/polarity",
                 "pattern": "{text} It was [MASK].", "verbalizers": {"negative": "bad", "positive": "good"}},
    "zh": {"name": "Chinese review sentiment (15,626 / 1,737)", "lang": "zh", "dir": ROOT / ".cache/zh-sentiment",
           "pattern": "{text}总之，很[MASK]。", "verbalizers": {"negative": "差", "positive": "好"}},
}
COLS = {
    "scratch": "head, random init",
    "tiny": "head, tiny BERT (ours)",
    "minilm": "head, MiniLM-L6",
    "bert_cloze": "cloze, tiny BERT MLM head",
    "glm_cloze": "cloze, tiny GLM",
}
SIZES = {"all": "all data", "32": "32 per class"}
TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512, "max_position_embeddings": 128}


def applies(row, col):
    if col == "minilm":
        return ROWS[row]["lang"] == "en"
    if col == "glm_cloze":
        return row == "spam"
    return True


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def write_toml(path, sections):
    lines = []
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def run(cmd, log):
    t0 = time.time()
    cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}  ({time.time() - t0:.1f} s, rc {cp.returncode})\n{cp.stderr[-2000:]}\n")
    if cp.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{cp.stderr[-3000:]}")
    return cp.stdout


def evals(run_dir):
    """The evaluation lines of a run's events.jsonl, in order."""
    out = []
    p = run_dir / "events.jsonl"
    for line in p.read_text().splitlines() if p.exists() else []:
        d = json.loads(line)
        if "eval" in d:
            out.append(d)
    return out


def subset(row, seed, per_class, out):
    """`per_class` training records per label, drawn with the seed."""
    recs = [json.loads(l) for l in (ROWS[row]["dir"] / "train.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    rng = random.Random(seed)
    rng.shuffle(recs)
    by = {}
    for r in recs:
        by.setdefault(r["label"], [])
        if len(by[r["label"]]) < per_class:
            by[r["label"]].append(r)
    picked = [r for v in by.values() for r in v]
    rng.shuffle(picked)
    path = out / f"{row}-seed{seed}-{per_class}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return path


class Plan:
    def __init__(self, a):
        self.a = a
        self.out = pathlib.Path(a.out).resolve()
        self.log = self.out / "commands.log"

    def pretrain(self):
        """The tiny checkpoints the columns start from."""
        # The configs' own 300 steps (the quick start's minute) leave an MLM that predicts
        # little more than frequent words (held-out accuracy 8 %); 2,000 reach 14 % on the
        # tiny corpus and are what made the checkpoint worth starting from (spam, 32 per class,
        # lr 1e-3: 83 % vs 61 % after 300 steps, 3 seeds). A GLM step costs twice an MLM step
        # here, so GLM gets half the steps, which keeps the whole script near 30 minutes.
        n = self.a.pretrain_steps
        jobs = [("mlm-en", "configs/pretrain-mlm-tiny.toml", n), ("glm-en", "configs/pretrain-glm-tiny.toml", n // 2), ("mlm-zh", "configs/pretrain-mlm-chinese-tiny.toml", n)]
        for name, cfg, steps in jobs:
            steps = 4 if self.a.smoke else steps
            sets = [f"train.max_steps={steps}", f"train.eval_every={max(1, steps // 2)}", f"train.checkpoint_every={max(1, steps // 2)}", f"train.warmup_steps={max(1, steps // 10)}"]
            smoke = [x for s in sets for x in ("--set", s)]
            d = self.out / "pre" / name
            if (d / "checkpoints" / "latest").exists():
                continue
            print(f"pre-training {name}", file=sys.stderr, flush=True)
            run([self.a.pretune, "train", ROOT / cfg, "--set", f"run.out_dir=\"{d}\"", "--set", "metrics.listen=\"\"", *smoke], self.log)

    def config(self, run_dir, row, col, seed, train, lr=None, patience=3, epochs=None):
        r = ROWS[row]
        en = r["lang"] == "en"
        minilm = col == "minilm"
        few = train.name.endswith("-32.jsonl")
        sections = {"run": {"name": f"pp-{row}-{col}", "seed": seed, "out_dir": str(run_dir), "device": "cpu", "threads": self.a.threads}}
        if col == "scratch":
            sections["tokenizer"] = {"path": str(ROOT / ("data/sotu/tokenizer.json" if en else ".cache/zh/vocab.txt"))}
            sections["model"] = dict(TINY)
        elif minilm:
            sections["init"] = {"hf": str(ROOT / ".cache/minilm/model")}
        elif col == "glm_cloze":
            sections["init"] = {"checkpoint": str(self.out / "pre/glm-en/checkpoints")}
        else:
            sections["init"] = {"checkpoint": str(self.out / "pre" / ("mlm-en" if en else "mlm-zh") / "checkpoints")}
        task = {"kind": "cloze" if col.endswith("cloze") else "sequence_classification", "metric": "accuracy", "max_eval_examples": self.a.max_eval}
        if col.endswith("cloze"):
            task["pattern"] = r["pattern"]
        sections["task"] = task
        if col.endswith("cloze"):
            sections["task.verbalizers"] = r["verbalizers"]
        sections["data"] = {"train": [str(train)], "eval": [str(r["dir"] / "dev.jsonl")]}
        steps = 2 if self.a.smoke else (self.a.steps if not minilm else self.a.minilm_steps)
        t = {"batch_size": 16 if (few or minilm) else 32, "max_seq_len": 64 if minilm else 128,
             "lr": lr if lr is not None else (5e-5 if minilm else 1e-3), "warmup_ratio": 0.1, "decay": "linear",
             "weight_decay": 0.01, "clip_grad_norm": 1.0, "log_every": 10, "patience": patience, "keep_last": 1}
        if self.a.smoke:
            t.update({"epochs": 0, "max_steps": steps, "eval_every": steps})
        elif few:
            # 64 examples, 4 updates per epoch: evaluate every epoch.
            t.update({"epochs": epochs or 8, "eval_every": 0})
        else:
            t.update({"epochs": 0, "max_steps": steps, "eval_every": max(1, steps // 2)})
        if minilm:
            t["layerwise_lr_decay"] = 0.9
        sections["train"] = t
        sections["metrics"] = {"listen": ""}
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.in.toml"
        write_toml(path, sections)
        return path

    def finetune(self, run_dir, *args, **kw):
        if evals(run_dir) and (run_dir / "done").exists():
            return
        if run_dir.exists():
            for p in sorted(run_dir.rglob("*"), reverse=True):
                p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        cfg = self.config(run_dir, *args, **kw)
        run([self.a.pretune, "train", cfg], self.log)
        (run_dir / "done").write_text("")

    def train_accuracy(self, run_dir, train, which):
        """Accuracy on the training examples of the checkpoint the run selects (`best`) or of
        its last one (`last`), written beside the run."""
        out = run_dir / f"train-eval-{which}.json"
        if out.exists():
            return
        ck = run_dir / "checkpoints"
        if which == "last":
            ck = ck / (ck / "latest").read_text().strip()
        out.write_text(run([self.a.pretune, "evaluate", "--checkpoint", ck, "--data", train, "--json"], self.log))

    def seeds(self):
        return [1] if self.a.smoke else list(range(1, SEEDS + 1))

    def all_runs(self):
        data = self.out / "data"
        data.mkdir(parents=True, exist_ok=True)
        # The smoke run builds every kind of config once (English and Chinese, each column,
        # both data sizes, a learning rate, both over-fitting runs) and renders the table.
        smoke_cells = {("spam", "32"), ("zh", "all")}
        for seed in self.seeds():
            for row in ROWS:
                for size in SIZES:
                    if self.a.smoke and (row, size) not in smoke_cells:
                        continue
                    train = ROWS[row]["dir"] / "train.jsonl" if size == "all" else subset(row, seed, 32, data)
                    for col in COLS:
                        if applies(row, col):
                            print(f"seed {seed}: {row} / {col} / {size}", file=sys.stderr, flush=True)
                            self.finetune(self.out / "runs" / row / col / size / f"seed{seed}", row, col, seed, train)
            train = subset("spam", seed, 32, data)
            for lr in ("1e-3",) if self.a.smoke else ("2e-5", "1e-4", "1e-3"):
                print(f"seed {seed}: learning rate {lr}", file=sys.stderr, flush=True)
                self.finetune(self.out / "runs/lr" / lr / f"seed{seed}", "spam", "tiny", seed, ROWS["spam"]["dir"] / "train.jsonl", lr=float(lr))
            for es, patience in (("without", 0), ("with", 3)):
                d = self.out / "runs/overfit" / es / f"seed{seed}"
                print(f"seed {seed}: over-fitting, {es} early stopping", file=sys.stderr, flush=True)
                self.finetune(d, "spam", "tiny", seed, train, patience=patience, epochs=None if self.a.smoke else 30)
                self.train_accuracy(d, train, "last" if es == "without" else "best")


def best_acc(run_dir):
    e = [d["eval"].get("accuracy") for d in evals(run_dir)]
    e = [x for x in e if x is not None]
    return max(e) if e else None


def last_acc(run_dir):
    e = [d["eval"].get("accuracy") for d in evals(run_dir)]
    e = [x for x in e if x is not None]
    return e[-1] if e else None


SEEDS = 3


def cell(xs, seeds=None):
    """Mean ± standard deviation in percent; `(n=K)` when fewer seeds than planned finished."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.mean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    short = f" (n={len(xs)})" if seeds and len(xs) < seeds else ""
    return f"{100 * m:.1f} ± {100 * sd:.1f}{short}"


def seed_dirs(d):
    return sorted(p for p in d.glob("seed*") if p.is_dir()) if d.exists() else []


def render(out, meta, seeds):
    runs = out / "runs"

    def c(xs):
        return cell(xs, seeds)

    lines = [START, "", f"Accuracy on the dev set in percent, mean ± standard deviation over seeds ({meta}).", "",
             "| data | labelled | " + " | ".join(COLS.values()) + " |", "|---|---|" + "---|" * len(COLS)]
    for row, r in ROWS.items():
        for size, sname in SIZES.items():
            cells = [c([best_acc(s) for s in seed_dirs(runs / row / col / size)]) if applies(row, col) else "n/a" for col in COLS]
            lines.append(f"| {r['name']} | {sname} | " + " | ".join(cells) + " |")
    lines += ["", "Learning rate, tiny BERT (ours) with a classification head, spam, all data:", "",
              "| lr | dev accuracy |", "|---|---|"]
    for lr in ("2e-5", "1e-4", "1e-3"):
        lines.append(f"| {lr} | {c([best_acc(s) for s in seed_dirs(runs / 'lr' / lr)])} |")
    lines += ["", "Over-fitting on 32 examples per class (spam, tiny BERT, 30 epochs at most):", "",
              "| | train accuracy | dev accuracy | gap |", "|---|---|---|---|"]
    for es, label, pick, which in (("without", "no early stopping, last checkpoint", last_acc, "last"), ("with", "early stopping (patience 3), best checkpoint", best_acc, "best")):
        tr, dv = [], []
        for s in seed_dirs(runs / "overfit" / es):
            f = s / f"train-eval-{which}.json"
            if f.exists():
                tr.append(json.loads(f.read_text().strip().splitlines()[-1]).get("accuracy"))
                dv.append(pick(s))
        gap = [a - b for a, b in zip(tr, dv) if a is not None and b is not None]
        lines.append(f"| {label} | {c(tr)} | {c(dv)} | {c(gap)} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(doc, table):
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + table + text[text.index(END) + len(END):]
    else:
        text = "# What pre-training buys\n\n" + table + "\n" + text
    doc.write_text(text, encoding="utf-8")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretune", default=str(ROOT / "target/release/pretune"))
    p.add_argument("--out", default=str(ROOT / "runs/pretraining-pays"))
    p.add_argument("--doc", default=str(ROOT / "docs/pretraining-pays.md"))
    p.add_argument("--steps", type=int, default=60, help="updates of an all-data run (tiny models)")
    p.add_argument("--minilm-steps", type=int, default=30, help="updates of an all-data MiniLM run")
    p.add_argument("--pretrain-steps", type=int, default=2000, help="pre-training steps of each tiny checkpoint")
    p.add_argument("--max-eval", type=int, default=400, help="dev examples scored (0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="one seed, 2 updates per run, 4 pre-training steps")
    p.add_argument("--table-only", action="store_true", help="re-render the table from the runs in --out")
    a = p.parse_args()
    plan = Plan(a)
    plan.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not a.table_only:
        plan.pretrain()
        plan.all_runs()
        (plan.out / "meta.json").write_text(json.dumps({"seconds": round(time.time() - t0), "smoke": a.smoke, "steps": a.steps, "minilm_steps": a.minilm_steps, "max_eval": a.max_eval,
                                                        "pretrain_steps": 4 if a.smoke else a.pretrain_steps,
                                                        "glm_pretrain_steps": 4 if a.smoke else a.pretrain_steps // 2, "cpu": cpu(), "date": time.strftime("%Y-%m-%d")}))
    m = json.loads((plan.out / "meta.json").read_text()) if (plan.out / "meta.json").exists() else {}
    if not m:
        # Rendered from a run that did not finish: say so, and what it had done.
        done = len(list((plan.out / "runs").rglob("done")))
        m = {"steps": a.steps, "minilm_steps": a.minilm_steps, "max_eval": a.max_eval, "cpu": cpu(), "date": time.strftime("%Y-%m-%d"),
             "seconds": f"an unfinished run ({done} fine-tuning runs done)", "smoke": a.smoke, "pretrain_steps": a.pretrain_steps, "glm_pretrain_steps": a.pretrain_steps // 2}
    meta = (f"{len(plan.seeds())} seed(s); tiny checkpoints pre-trained {m.get('pretrain_steps', 300)} steps (GLM {m.get('glm_pretrain_steps', 300)}); all data = {m.get('steps')} updates (MiniLM {m.get('minilm_steps')}); the first {m.get('max_eval') or 'all'} dev examples; "
            f"{m.get('cpu')}, {m.get('date')}, " + (f"{m.get('seconds')} s in all" if isinstance(m.get('seconds'), int) else str(m.get('seconds'))) + (" — SMOKE RUN" if m.get("smoke") else ""))
    table = render(plan.out, meta, len(plan.seeds()))
    write_doc(pathlib.Path(a.doc), table)
    print(table)


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} × {os.cpu_count()}"
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
