#!/usr/bin/env python3
"""The peer of scripts/gpu-check.sh: `transformers.Trainer` with `bf16=True` pre-training
BertForPreTraining (MLM + NSP) from a BertConfig of pretune's BERT-base sizes on the same
corpus and tokenizer (128-token pairs, 15 % masking by DataCollatorForLanguageModeling, fused
AdamW, 2 dataloader workers), timed by a callback after the warm-up steps. Prints one JSON line:
tokens/s, the step time, peak memory (reserved and allocated) and the loss. Needs `accelerate`
(transformers' Trainer does); without it the line says so and the plain-loop peer
(scripts/gpu_baseline.py) is the only comparison.
"""
import argparse
import json
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--corpus", default="data/sotu/train.txt")
    p.add_argument("--tokenizer", default="data/sotu/tokenizer.json")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default="/tmp/hf-trainer")
    a = p.parse_args()
    try:
        import accelerate  # noqa: F401
    except ImportError:
        print(json.dumps({"side": "transformers.Trainer", "skipped": "accelerate is not installed (transformers.Trainer needs it)"}))
        return
    from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from gpu_baseline import nsp_examples  # the plain loop's data, pair for pair

    torch.manual_seed(0)
    tok, examples, _ = nsp_examples(a.tokenizer, a.corpus, a.seq)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=512, type_vocab_size=2, pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    model = BertForPreTraining(cfg)

    class Clock(TrainerCallback):
        t0, at = None, 0

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == a.warmup:
                torch.cuda.synchronize()
                Clock.t0, Clock.at = time.perf_counter(), state.global_step

    args = TrainingArguments(output_dir=a.out, per_device_train_batch_size=a.batch, max_steps=a.warmup + a.steps, bf16=True,
                             learning_rate=1e-4, weight_decay=0.01, warmup_steps=10, optim="adamw_torch_fused",
                             logging_steps=50, save_strategy="no", report_to=[], dataloader_num_workers=2,
                             dataloader_drop_last=True, disable_tqdm=True)
    coll = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15, pad_to_multiple_of=a.seq)
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=coll, callbacks=[Clock()])
    out = trainer.train()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - Clock.t0) / a.steps
    print(json.dumps({"side": "transformers.Trainer", "batch": a.batch, "seq": a.seq, "steps": a.steps, "s_per_step": round(dt, 5),
                      "tokens_per_s": round(a.batch * a.seq / dt), "loss": round(out.training_loss, 3), "torch": torch.__version__,
                      "peak_mem_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
                      "peak_mem_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}))


if __name__ == "__main__":
    main()
