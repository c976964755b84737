#!/usr/bin/env python3
"""GLM generation, measured: headline generation (BBC News) and generative question answering
(SQuAD v1.1) fine-tuned from the tiny GLM pre-trained here and from the same model with fresh
weights (`init.reinitialize`), 3 seeds each, on 2 CPU cores; summarised from the runs' own
events.jsonl files into docs/glm-generation.md, next to the lead baseline (the article's first
N words, N the mean training-headline length) and the extractive MiniLM result of
BENCHMARKS.md.

The runs are the two configs as written (configs/finetune-glm-headline-tiny.toml,
configs/finetune-glm-squad-gen-tiny.toml) with the seed, the starting point and the budgets
below set on the command line; the settings were fixed before any dev result was seen.

    scripts/glm-generation.sh              # = this script with the release binary (~30 min)
    scripts/glm_generation.py --smoke --pretune target/debug/pretune --out /tmp/gg   # seconds
    scripts/glm_generation.py --table-only --out runs/glm-generation   # re-render only

The table sits between the markers in docs/glm-generation.md; text outside them is kept.
Needs the venv's rouge-score (the lead baseline is scored by it).
"""
import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- table:start -->", "<!-- table:end -->"
SEEDS = 3
TASKS = {
    "headline": {"config": "configs/finetune-glm-headline-tiny.toml", "metrics": ["rouge1", "rouge2", "rougeL"],
                 "name": "BBC headlines (1,780 train / 222 dev articles)"},
    "squad": {"config": "configs/finetune-glm-squad-gen-tiny.toml", "metrics": ["exact_match", "f1"],
              "name": "SQuAD v1.1 as generation"},
}
INITS = {"pretrained": "tiny GLM, pre-trained (ours)", "random": "same GLM, random init"}
# Extractive QA peer (BENCHMARKS.md, "Question answering"): all-MiniLM-L6-v2, 4,000 training
# questions, 200 updates, whole dev set.
MINILM = {"exact_match": 21.34, "f1": 33.04}


def run(cmd, log):
    t0 = time.time()
    cp = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}  ({time.time() - t0:.1f} s, rc {cp.returncode})\n{cp.stderr[-2000:]}\n")
    if cp.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{cp.stderr[-3000:]}")
    return cp.stdout


def evals(run_dir):
    p = run_dir / "events.jsonl"
    out = []
    for line in p.read_text().splitlines() if p.exists() else []:
        d = json.loads(line)
        if d.get("kind") == "eval":
            out.append(d["eval"])
    return out


def best(run_dir, monitor):
    """The evaluation with the best monitored metric (the run's best checkpoint)."""
    e = [m for m in evals(run_dir) if monitor in m]
    return max(e, key=lambda m: m[monitor]) if e else None


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {len([l for l in open('/proc/cpuinfo') if l.startswith('processor')])} cores"
    except OSError:
        pass
    return platform.processor()


class Plan:
    def __init__(self, a):
        self.a = a
        self.out = pathlib.Path(a.out).resolve()
        self.log = self.out / "commands.log"

    def pretrain(self):
        d = self.out / "pre"
        if (d / "checkpoints" / "latest").exists():
            return
        n = 4 if self.a.smoke else self.a.pretrain_steps
        print(f"pre-training the tiny GLM for {n} steps", file=sys.stderr, flush=True)
        sets = [f"run.out_dir=\"{d}\"", "metrics.listen=\"\"", f"train.max_steps={n}", f"train.eval_every={max(1, n // 2)}",
                f"train.checkpoint_every={max(1, n // 2)}", f"train.warmup_steps={max(1, n // 10)}"]
        run([self.a.pretune, "train", ROOT / "configs/pretrain-glm-tiny.toml", *[x for s in sets for x in ("--set", s)]], self.log)

    def finetune(self, task, init, seed):
        d = self.out / "runs" / task / init / f"seed{seed}"
        if (d / "done").exists():
            return
        sets = [f"run.out_dir=\"{d}\"", f"run.seed={seed}", "metrics.listen=\"\"", "run.device=\"cpu\"",
                f"init.checkpoint=\"{self.out / 'pre/checkpoints'}\"", f"init.reinitialize={'true' if init == 'random' else 'false'}"]
        if task == "headline":
            sets += ["task.max_eval_examples=0"]
        else:
            sets += [f"task.max_train_examples={self.a.squad_train}", f"task.max_eval_examples={self.a.squad_eval}", "train.eval_every=0"]
        if self.a.smoke:
            sets += ["train.epochs=0", "train.max_steps=2", "train.eval_every=2", "task.max_eval_examples=8", "task.max_train_examples=64"]
        print(f"seed {seed}: {task} from {init}", file=sys.stderr, flush=True)
        run([self.a.pretune, "train", ROOT / TASKS[task]["config"], *[x for s in sets for x in ("--set", s)]], self.log)
        (d / "done").write_text("")

    def lead(self):
        """The lead baseline on the headline dev set, scored by rouge-score."""
        from rouge_score import rouge_scorer
        train = [json.loads(l) for l in (ROOT / ".cache/bbc-headlines/train.jsonl").read_text().splitlines() if l.strip()]
        dev = [json.loads(l) for l in (ROOT / ".cache/bbc-headlines/dev.jsonl").read_text().splitlines() if l.strip()]
        n = round(statistics.mean(len(r["target"].split()) for r in train))
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
        scores = [scorer.score(r["target"], " ".join(r["source"].split()[:n])) for r in dev]
        lead = {k: 100 * statistics.mean(s[k].fmeasure for s in scores) for k in ("rouge1", "rouge2", "rougeL")}
        (self.out / "lead.json").write_text(json.dumps({"words": n, "examples": len(dev), **lead}))

    def all(self):
        self.pretrain()
        self.lead()
        for seed in ([1] if self.a.smoke else range(1, SEEDS + 1)):
            for task in TASKS:
                for init in INITS:
                    self.finetune(task, init, seed)


def cell(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}"


def seeds_of(d):
    return sorted(p for p in d.glob("seed*") if p.is_dir()) if d.exists() else []


def render(out, meta):
    runs = out / "runs"
    lead = json.loads((out / "lead.json").read_text()) if (out / "lead.json").exists() else {}
    lines = [START, "", meta, ""]
    h = TASKS["headline"]
    lines += [f"**Headline generation**, {h['name']}: ROUGE F-measure ×100 on the dev set at each run's best checkpoint "
              "(by ROUGE-L), mean ± standard deviation over seeds, every seed listed.", "",
              "| starting point | ROUGE-1 | ROUGE-2 | ROUGE-L | per seed (ROUGE-L) |", "|---|---|---|---|---|"]
    for init, name in INITS.items():
        bests = [best(s, "rougeL") for s in seeds_of(runs / "headline" / init)]
        cols = [cell([b.get(k) if b else None for b in bests]) for k in h["metrics"]]
        per = ", ".join(f"{b['rougeL']:.1f}" for b in bests if b)
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {per} |")
    if lead:
        lines.append(f"| lead baseline: the article's first {lead['words']} words | {lead['rouge1']:.1f} | {lead['rouge2']:.1f} | {lead['rougeL']:.1f} | (deterministic) |")
    q = TASKS["squad"]
    lines += ["", f"**Generative question answering**, {q['name']}: exact match and token F1 (SQuAD's normalisation, best over "
              "the reference answers) on the first dev questions at each run's best checkpoint (by F1).", "",
              "| model | exact match | F1 | per seed (F1) |", "|---|---|---|---|"]
    for init, name in INITS.items():
        bests = [best(s, "f1") for s in seeds_of(runs / "squad" / init)]
        cols = [cell([b.get(k) if b else None for b in bests]) for k in q["metrics"]]
        per = ", ".join(f"{b['f1']:.1f}" for b in bests if b)
        lines.append(f"| {name}, generative | " + " | ".join(cols) + f" | {per} |")
    lines.append(f"| all-MiniLM-L6-v2 (22 M parameters, pre-trained by others), extractive; BENCHMARKS.md, whole dev set, one seed | {MINILM['exact_match']:.1f} | {MINILM['f1']:.1f} | |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(doc, table):
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + table + text[text.index(END) + len(END):]
    else:
        text = "# GLM generation, measured\n\n" + table + "\n" + text
    doc.write_text(text, encoding="utf-8")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretune", default=str(ROOT / "target/release/pretune"))
    p.add_argument("--out", default=str(ROOT / "runs/glm-generation"))
    p.add_argument("--doc", default=str(ROOT / "docs/glm-generation.md"))
    p.add_argument("--pretrain-steps", type=int, default=2000, help="pre-training steps of the tiny GLM")
    p.add_argument("--squad-train", type=int, default=8000, help="SQuAD training questions")
    p.add_argument("--squad-eval", type=int, default=500, help="SQuAD dev questions scored")
    p.add_argument("--smoke", action="store_true", help="one seed, 2 updates per run, 4 pre-training steps")
    p.add_argument("--table-only", action="store_true", help="re-render the table from the runs in --out")
    a = p.parse_args()
    plan = Plan(a)
    plan.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not a.table_only:
        plan.all()
        (plan.out / "meta.json").write_text(json.dumps({"seconds": round(time.time() - t0), "smoke": a.smoke, "cpu": cpu(), "date": time.strftime("%Y-%m-%d"),
                                                        "pretrain_steps": 4 if a.smoke else a.pretrain_steps, "squad_train": a.squad_train, "squad_eval": a.squad_eval}))
    m = json.loads((plan.out / "meta.json").read_text()) if (plan.out / "meta.json").exists() else {}
    meta = (f"Measured {m.get('date', '?')} on {m.get('cpu', '?')} in {m.get('seconds', 0) / 60:.0f} minutes by `scripts/glm-generation.sh`"
            f"{' (SMOKE: 2 updates per run, not a result)' if m.get('smoke') else ''}: the tiny GLM (2 layers, width 128, 8k WordPiece "
            f"vocabulary from the bundled State of the Union corpus) pre-trained for {m.get('pretrain_steps', '?')} steps by "
            f"configs/pretrain-glm-tiny.toml; SQuAD runs train on the first {m.get('squad_train', '?')} questions and score the first "
            f"{m.get('squad_eval', '?')} dev questions.")
    write_doc(pathlib.Path(a.doc), render(plan.out, meta))
    print(f"table written to {a.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
