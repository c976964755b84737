"""Golden fixture for extractive question answering, with `transformers` and the fast tokenizer
as the oracle:

* head: BertForQuestionAnswering (every parameter perturbed) on windows of different lengths,
  each run alone (no padding): start / end logits and the loss per window;
* windows: the first 150 SQuAD v1.1 dev questions plus Unicode cases (Chinese, emoji, combining
  marks, an empty question) cut by the MiniLM fast tokenizer exactly as run_qa.py's
  prepare_train_features does (`truncation="only_second"`, `return_overflowing_tokens`,
  `return_offsets_mapping`, max_length 96, stride 32) with its start / end labels;
* post-processing: fixed random logits per window and the answers of run_qa.py's
  postprocess_qa_predictions (utils_qa.py, SQuAD v1 branch, written out below);
* metrics: compute_exact / compute_f1 of transformers 4.57.1's squad_metrics.py (transformers 5
  dropped the module; the set-up extracts that file into .cache/oracle/);
* SQuAD v2.0: the same questions plus 60 made unanswerable (a question asked of another
  question's context, no answer), `[CLS]` logits raised so the null answer sometimes wins,
  run_qa.py's postprocess_qa_predictions with version_2_with_negative=True (written out below)
  at two null thresholds, and squad_metrics.squad_evaluate on its best non-null answers with the
  score differences as no-answer probabilities (exact / F1, HasAns / NoAns, best thresholds).

    .venv/bin/python scripts/make_qa_fixture.py target/fixtures/qa
"""
import ast
import collections
import json
import pathlib
import re
import string
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForQuestionAnswering, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LEN, STRIDE, N_BEST, MAX_ANSWER = 96, 32, 20, 12


def oracle_metrics():
    """compute_exact, compute_f1 and normalize_answer from squad_metrics.py, without importing
    the rest of transformers 4 (only these functions, which need re, string and collections)."""
    src = (ROOT / ".cache/oracle/squad_metrics.py").read_text()
    keep = {"normalize_answer", "get_tokens", "compute_exact", "compute_f1", "get_raw_scores", "apply_no_ans_threshold",
            "make_eval_dict", "merge_eval", "find_best_thresh", "find_all_best_thresh", "squad_evaluate"}
    tree = ast.parse(src)
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in keep]
    ns = {"re": re, "string": string, "collections": collections}
    exec(compile(tree, "squad_metrics.py", "exec"), ns)
    return ns


def head(out: pathlib.Path) -> None:
    torch.manual_seed(11)
    cfg = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
                     max_position_embeddings=40, type_vocab_size=2, pad_token_id=0)
    model = BertForQuestionAnswering(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lengths = [16, 11, 7, 14]
    b, t = len(lengths), 16
    input_ids = torch.zeros(b, t, dtype=torch.long)
    token_type_ids = torch.zeros(b, t, dtype=torch.long)
    start_logits, end_logits = torch.zeros(b, t), torch.zeros(b, t)
    starts, ends, losses = [], [], []
    for r, n in enumerate(lengths):
        ids = torch.randint(5, 60, (n,))
        types = (torch.arange(n) >= n // 3).long()
        s = int(torch.randint(0, n, ()))
        e = min(n - 1, s + int(torch.randint(0, 3, ())))
        if r == 1:
            s = e = 0  # an answer outside the window: labelled at [CLS]
        with torch.no_grad():
            o = model(input_ids=ids[None], token_type_ids=types[None], start_positions=torch.tensor([s]), end_positions=torch.tensor([e]))
        input_ids[r, :n], token_type_ids[r, :n] = ids, types
        start_logits[r, :n], end_logits[r, :n] = o.start_logits[0], o.end_logits[0]
        starts.append(s)
        ends.append(e)
        losses.append(float(o.loss))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(state, out / "head_weights.safetensors")
    save_file({
        "input_ids": input_ids, "token_type_ids": token_type_ids, "lengths": torch.tensor(lengths),
        "start_positions": torch.tensor(starts), "end_positions": torch.tensor(ends),
        "start_logits": start_logits, "end_logits": end_logits, "loss": torch.tensor([sum(losses) / len(losses)], dtype=torch.float64),
    }, out / "head_batch.safetensors")
    (out / "head_config.json").write_text(cfg.to_json_string())


def records() -> list:
    dev = json.loads((ROOT / ".cache/squad/dev-v1.1.json").read_text())
    out = []
    for article in dev["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append({"id": qa["id"], "question": qa["question"], "context": para["context"],
                            "answers": {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    out = out[:150]
    # Long contexts (many windows) and Unicode: offsets count characters, not bytes.
    zh = "北京是中华人民共和国的首都，也是全国的政治、文化中心。" * 3 + "长城位于中国北方，全长两万多公里。"
    emoji = "We went to the beach 🏖️ and then 🍕 pizza at Luigi's place in Naples, the city of pizza. " * 4
    marks = "Cafe\u0301 de Flore is in Pari\u0301s; Zoë and Chloé met Jose\u0301 there on a rainy Tuesday. " * 3
    cases = [("zh", "长城全长多少？", zh, "两万多公里"), ("emoji", "Where did they eat pizza?", emoji, "Luigi's place"),
             ("marks", "Who met José?", marks, "Zoë and Chloé"), ("empty-question", "", marks, "Tuesday"),
             ("long-question", " ".join(["what"] * 80) + "?", emoji, "Naples")]
    for cid, q, ctx, ans in cases:
        k = ctx.rfind(ans)
        out.append({"id": cid, "question": q, "context": ctx, "answers": {"text": [ans], "answer_start": [k]}})
    return out


def windows(recs: list, tok) -> list:
    """run_qa.py's prepare_train_features (labels) with the offsets prepare_validation_features
    keeps (None outside the context)."""
    feats = []
    for i, r in enumerate(recs):
        q = r["question"].lstrip()
        # run_qa.py stops on a question too long for a window; we cut it to leave room for
        # context beyond the stride (MIN_NEW_CONTEXT = 1 token), as the Rust side does.
        q_ids = tok(q, add_special_tokens=False, return_offsets_mapping=True)
        room = MAX_LEN - 3 - STRIDE - 1
        if len(q_ids["input_ids"]) > room:
            q = q[: q_ids["offset_mapping"][room][0]]
        enc = tok(q, r["context"], truncation="only_second", max_length=MAX_LEN, stride=STRIDE,
                  return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True, padding=False)
        # An unanswerable question (SQuAD v2.0) is labelled at [CLS] in every window.
        start_char = r["answers"]["answer_start"][0] if r["answers"]["text"] else None
        end_char = start_char + len(r["answers"]["text"][0]) if start_char is not None else None
        for w in range(len(enc["input_ids"])):
            ids, offsets, seq = enc["input_ids"][w], enc["offset_mapping"][w], enc.sequence_ids(w)
            s = 0
            while seq[s] != 1:
                s += 1
            e = len(ids) - 1
            while seq[e] != 1:
                e -= 1
            last_context = e
            overran = False
            if start_char is None or not (offsets[s][0] <= start_char and offsets[e][1] >= end_char):
                start = end = 0
            else:
                while s < len(offsets) and offsets[s][0] <= start_char:
                    s += 1
                start = s - 1
                while offsets[e][1] >= end_char:
                    e -= 1
                end = e + 1
                # run_qa.py walks past the last context token when the answer starts in it.
                overran = start > last_context
            feats.append({"question": i, "input_ids": ids, "token_type_ids": enc["token_type_ids"][w],
                          "offsets": [list(o) if seq[k] == 1 else None for k, o in enumerate(offsets)],
                          "start": start, "end": end, "overran": overran})
    return feats


def candidates(feats: list, keys: list, start_logits: list, end_logits: list) -> tuple:
    """The question's windows `keys`: its candidate spans and its lowest null score, as
    utils_qa.postprocess_qa_predictions collects them."""
    min_null, prelim = None, []
    for k in keys:
        sl, el, offsets = start_logits[k], end_logits[k], feats[k]["offsets"]
        null = sl[0] + el[0]
        if min_null is None or min_null["score"] > null:
            min_null = {"offsets": (0, 0), "score": null, "start_logit": sl[0], "end_logit": el[0]}
        for a in np.argsort(sl)[-1: -N_BEST - 1: -1].tolist():
            for b in np.argsort(el)[-1: -N_BEST - 1: -1].tolist():
                if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or len(offsets[a]) < 2 or offsets[b] is None or len(offsets[b]) < 2:
                    continue
                if b < a or b - a + 1 > MAX_ANSWER:
                    continue
                prelim.append({"offsets": (offsets[a][0], offsets[b][1]), "score": sl[a] + el[b], "start_logit": sl[a], "end_logit": el[b]})
    return prelim, min_null


def by_question(feats: list) -> dict:
    out = collections.defaultdict(list)
    for k, f in enumerate(feats):
        out[f["question"]].append(k)
    return out


def postprocess(recs: list, feats: list, start_logits: list, end_logits: list) -> dict:
    """utils_qa.postprocess_qa_predictions, version_2_with_negative=False, one example."""
    windows = by_question(feats)
    preds = {}
    for i, r in enumerate(recs):
        prelim, _ = candidates(feats, windows[i], start_logits, end_logits)
        best = sorted(prelim, key=lambda x: x["score"], reverse=True)[:N_BEST]
        preds[r["id"]] = r["context"][best[0]["offsets"][0]: best[0]["offsets"][1]] if best else ""
    return preds


def postprocess_v2(recs: list, feats: list, start_logits: list, end_logits: list, threshold: float) -> dict:
    """utils_qa.postprocess_qa_predictions, version_2_with_negative=True: per question its
    answer, its score difference and its best non-null text."""
    windows = by_question(feats)
    out = {}
    for i, r in enumerate(recs):
        prelim, min_null = candidates(feats, windows[i], start_logits, end_logits)
        prelim.append(min_null)
        null_score = min_null["score"]
        preds = sorted(prelim, key=lambda x: x["score"], reverse=True)[:N_BEST]
        if not any(p["offsets"] == (0, 0) for p in preds):
            preds.append(min_null)
        for p in preds:
            p["text"] = r["context"][p["offsets"][0]: p["offsets"][1]]
        if len(preds) == 0 or (len(preds) == 1 and preds[0]["text"] == ""):
            preds.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        j = 0
        while preds[j]["text"] == "":
            j += 1
        best = preds[j]
        diff = float(null_score - best["start_logit"] - best["end_logit"])
        out[r["id"]] = {"answer": "" if diff > threshold else best["text"], "diff": diff, "span": best["text"]}
    return out


def squad_v2(out: pathlib.Path, recs: list, tok, m: dict) -> None:
    """Unanswerable questions added, run_qa.py's v2 post-processing and squad_evaluate."""
    v2 = [dict(r) for r in recs]
    for k in range(60):
        q, other = recs[k], recs[(k + 77) % 150]
        v2.append({"id": q["id"] + "-none", "question": q["question"], "context": other["context"], "answers": {"text": [], "answer_start": []}})
    (out / "records_v2.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in v2))
    feats = windows(v2, tok)
    rng = np.random.default_rng(5)
    start_logits, end_logits = [], []
    for f in feats:
        sl, el = rng.normal(size=len(f["input_ids"])).astype(np.float32), rng.normal(size=len(f["input_ids"])).astype(np.float32)
        sl[0] += np.float32(rng.normal(2.5, 2.0))
        el[0] += np.float32(rng.normal(2.5, 2.0))
        # Half the windows that hold their answer point at it, so some answers are right.
        if f["start"] > 0 and rng.random() < 0.5:
            sl[f["start"]] += np.float32(3.0)
            el[f["end"]] += np.float32(3.0)
        start_logits.append(sl)
        end_logits.append(el)
    save_file({"start": torch.tensor(np.concatenate(start_logits)), "end": torch.tensor(np.concatenate(end_logits)), "windows": torch.tensor([len(feats)])}, out / "logits_v2.safetensors")
    examples = [types.SimpleNamespace(qas_id=r["id"], answers=[{"text": t} for t in r["answers"]["text"]]) for r in v2]
    result = {}
    for threshold in (0.0, -1.5):
        preds = postprocess_v2(v2, feats, start_logits, end_logits, threshold)
        spans = {k: v["span"] for k, v in preds.items()}
        diffs = {k: v["diff"] for k, v in preds.items()}
        evaluation = m["squad_evaluate"](examples, spans, diffs, threshold)
        result[str(threshold)] = {"predictions": preds, "evaluation": dict(evaluation)}
    (out / "squad_v2.json").write_text(json.dumps(result, ensure_ascii=False))


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    head(out)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(ROOT / ".cache/minilm/model/tokenizer.json"))
    recs = records()
    (out / "records.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    feats = windows(recs, tok)
    (out / "windows.jsonl").write_text("".join(json.dumps(f) + "\n" for f in feats))
    rng = np.random.default_rng(3)
    start_logits = [rng.normal(size=len(f["input_ids"])).astype(np.float32) for f in feats]
    end_logits = [rng.normal(size=len(f["input_ids"])).astype(np.float32) for f in feats]
    save_file({"start": torch.tensor(np.concatenate(start_logits)), "end": torch.tensor(np.concatenate(end_logits))}, out / "logits.safetensors")
    (out / "predictions.json").write_text(json.dumps(postprocess(recs, feats, start_logits, end_logits), ensure_ascii=False))
    m = oracle_metrics()
    pairs = [("The Eiffel Tower", "eiffel tower"), ("an apple a day", "Apple Day!"), ("the", ""), ("", ""), ("", "x"),
             ("Denver Broncos", "Denver Broncos."), ("Paris, France", "paris france"), ("Zoë  and\tChloé", "zoë and chloé"),
             ("北京 是 首都", "北京是首都"), ("a_an the_the", "the a_an"), ("théâtre", "the theatre"), ("1,000 km", "1000 km"),
             ("Cafe\u0301 an", "café"), ("one two two", "two two three"), ("ΑΝ the Ω", "αν ω"), ("«the» end", "« » end")]
    for r in recs[:60]:
        pairs.append((r["answers"]["text"][0], r["answers"]["text"][-1]))
        pairs.append((r["context"][:40], r["answers"]["text"][0]))
    (out / "metrics.jsonl").write_text("".join(json.dumps({"pred": p, "gold": g, "exact": m["compute_exact"](g, p), "f1": m["compute_f1"](g, p)}, ensure_ascii=False) + "\n" for p, g in pairs))
    squad_v2(out, recs, tok, m)
    print(f"wrote {out}: {len(recs)} questions, {len(feats)} windows")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/qa"))
