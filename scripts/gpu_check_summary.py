#!/usr/bin/env python3
"""Reads what scripts/gpu-check.sh left in its work folder and writes every number to one JSON
file (bench-results/DATE-gpu-check/results.json), then prints a summary table.

    gpu_check_summary.py WORK_DIR RESULT_JSON [WARMUP_STEPS]

WORK_DIR holds: check.txt (`pretune check`), device.txt (libtorch's view), for each run NAME
(bert, glm, qa) NAME/events.jsonl and mem-NAME.txt (nvidia-smi samples of used MiB), and
hf-trainer.json / hf-loop.json (the peers), qa-predict-{device,cpu}.jsonl and .time (`pretune
predict` with the QA checkpoint on each device) and nccl.txt when they ran. A missing part is
reported as missing, never invented.
"""
import json
import os
import sys

WARMUP_STEPS = 20


def read_events(path):
    steps, evals, finished = [], [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("kind") == "step":
                steps.append(r)
            elif r.get("kind") == "eval":
                evals.append(r)
            elif r.get("kind") == "finished":
                finished = r
    return steps, evals, finished


def run_numbers(work, name):
    path = os.path.join(work, name, "events.jsonl")
    if not os.path.exists(path):
        return {"missing": f"{path} not written"}
    steps, evals, finished = read_events(path)
    timed = [s for s in steps if s["step"] > WARMUP_STEPS]
    out = {"steps": steps[-1]["step"] if steps else 0}
    if len(timed) >= 2:
        t0 = next(s for s in steps if s["step"] >= WARMUP_STEPS)
        last = timed[-1]
        dt = last["elapsed_s"] - t0["elapsed_s"]
        out["tokens_per_s"] = round((last["tokens"] - t0["tokens"]) / dt) if dt > 0 else None
        mfus = [(s["mfu"], s["elapsed_s"]) for s in timed if s.get("mfu") is not None]
        out["mfu"] = round(sum(m for m, _ in mfus) / len(mfus), 4) if mfus else None
        out["loss_first_last"] = [steps[0]["loss"], last["loss"]]
    if evals:
        out["eval"] = evals[-1]["eval"]
    if finished:
        out["ended_by"] = finished.get("ended_by")
    mem = os.path.join(work, f"mem-{name}.txt")
    if os.path.exists(mem):
        used = [int(x) for x in open(mem).read().split() if x.strip().isdigit()]
        out["peak_device_mem_gb"] = round(max(used) / 1024, 2) if used else None
    return out


def inference_numbers(work):
    """`pretune predict` with the QA checkpoint, --device DEVICE against --device cpu: the share
    of questions answered the same, the largest score difference, and each side's time."""
    sides = {}
    for side in ("device", "cpu"):
        pred, timing = os.path.join(work, f"qa-predict-{side}.jsonl"), os.path.join(work, f"qa-predict-{side}.time")
        if not (os.path.exists(pred) and os.path.exists(timing)):
            return {"missing": f"{pred} not written"}
        with open(pred, encoding="utf-8") as f:
            rows = {r["id"]: r for r in (json.loads(line) for line in f if line.strip())}
        dev, t0, t1 = open(timing).read().split()
        sides[side] = (dev, rows, float(t1) - float(t0))
    (dev, on_dev, t_dev), (_, on_cpu, t_cpu) = sides["device"], sides["cpu"]
    same = sum(1 for k, r in on_dev.items() if k in on_cpu and r.get("answer") == on_cpu[k].get("answer"))
    diffs = [abs(r["score"] - on_cpu[k]["score"]) for k, r in on_dev.items() if k in on_cpu and isinstance(r.get("score"), (int, float)) and isinstance(on_cpu[k].get("score"), (int, float))]
    return {"device": dev, "questions": len(on_cpu), "same_answers": same, "same_share": round(same / len(on_cpu), 4) if on_cpu else None,
            "max_score_diff": round(max(diffs), 6) if diffs else None, "seconds_device": round(t_dev, 2), "seconds_cpu": round(t_cpu, 2)}


def main():
    global WARMUP_STEPS
    work, result = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        WARMUP_STEPS = int(sys.argv[3])
    read = lambda f: open(os.path.join(work, f), encoding="utf-8").read().strip() if os.path.exists(os.path.join(work, f)) else None
    loads = lambda f: json.loads(read(f).splitlines()[-1]) if read(f) else {"missing": f"{f} not written"}
    r = {"check": read("check.txt"), "device": read("device.txt"),
         "bert_base_mlm_nsp": run_numbers(work, "bert"), "glm_base": run_numbers(work, "glm"),
         "minilm_squad": run_numbers(work, "qa"), "hf_trainer_bert_base": loads("hf-trainer.json"),
         "hf_plain_loop_bert_base": loads("hf-loop.json"), "minilm_squad_predict": inference_numbers(work),
         "nccl": read("nccl.txt") or "not run (fewer than two GPUs)"}
    ours, hf = r["bert_base_mlm_nsp"], r["hf_trainer_bert_base"]
    if ours.get("tokens_per_s") and hf.get("tokens_per_s"):
        r["ratio_bert_tokens_per_s_ours_over_hf_trainer"] = round(ours["tokens_per_s"] / hf["tokens_per_s"], 3)
    for peer in (hf, r["hf_plain_loop_bert_base"]):
        if ours.get("mfu") and ours.get("tokens_per_s") and peer.get("tokens_per_s"):
            # The same formula applied to the peer's tokens/s (same model, batch and shapes).
            peer["mfu_same_formula"] = round(ours["mfu"] * peer["tokens_per_s"] / ours["tokens_per_s"], 4)
    os.makedirs(os.path.dirname(result) or ".", exist_ok=True)
    with open(result, "w", encoding="utf-8") as f:
        json.dump(r, f, indent=2)
    print(f"device: {r['device']}")
    print("| run | tokens/s | MFU | peak memory (GB) | notes |")
    print("|---|---|---|---|---|")
    for label, key in [("BERT-base MLM+NSP (pretune)", "bert_base_mlm_nsp"), ("BERT-base (transformers.Trainer, bf16=True)", "hf_trainer_bert_base"),
                       ("BERT-base (plain PyTorch loop)", "hf_plain_loop_bert_base"), ("GLM-base (pretune)", "glm_base"), ("MiniLM SQuAD (pretune)", "minilm_squad")]:
        x = r[key]
        # A peer's MFU by our formula (its own `mfu` assumes its own peak).
        mfu = x.get("mfu_same_formula") if key.startswith("hf_") else x.get("mfu")
        mem = x.get("peak_device_mem_gb", x.get("peak_mem_reserved_gb"))
        note = x.get("missing") or x.get("skipped") or (f"dev F1 {x['eval'].get('f1'):.1f}" if "eval" in x and "f1" in x["eval"] else "")
        tps = x.get("tokens_per_s")
        print(f"| {label} | {tps if tps is not None else '-'} | {f'{100 * mfu:.1f} %' if mfu else '-'} | {mem if mem is not None else '-'} | {note} |")
    if "ratio_bert_tokens_per_s_ours_over_hf_trainer" in r:
        print(f"BERT-base tokens/s, pretune / transformers.Trainer: {r['ratio_bert_tokens_per_s_ours_over_hf_trainer']:.2f}x")
    inf = r["minilm_squad_predict"]
    if "missing" in inf:
        print(f"predict on the device: {inf['missing']}")
    else:
        print(f"predict, MiniLM SQuAD checkpoint, {inf['questions']} questions: --device {inf['device']} {inf['seconds_device']} s, --device cpu {inf['seconds_cpu']} s; "
              f"the same answer for {inf['same_answers']} ({100 * inf['same_share']:.1f} %), scores within {inf['max_score_diff']}")
    print(f"NCCL: {r['nccl']}")
    print(f"wrote {result}")


if __name__ == "__main__":
    main()
