"""Golden fixture for the task heads: transformers' BertForSequenceClassification (3 labels),
BertForSequenceClassification with one output (regression) and BertForTokenClassification
(5 labels) on one padded batch, every parameter perturbed; their logits and losses.

    .venv/bin/python scripts/make_heads_fixture.py target/fixtures/heads
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification


def main(out_dir: pathlib.Path) -> None:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    base = dict(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=48,
                max_position_embeddings=32, type_vocab_size=2, pad_token_id=0)
    b, t = 3, 12
    lengths = torch.tensor([12, 8, 5])
    valid = torch.arange(t)[None, :] < lengths[:, None]
    input_ids = torch.where(valid, torch.randint(5, 50, (b, t)), torch.zeros(b, t, dtype=torch.long))
    token_type_ids = torch.where(valid & (torch.arange(t)[None, :] >= 6), 1, 0)
    attention_mask = valid.long()
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask, "lengths": lengths}
    for name, cls, extra, labels in (
        ("cls", BertForSequenceClassification, {"num_labels": 3}, torch.tensor([2, 0, 1])),
        ("reg", BertForSequenceClassification, {"num_labels": 1, "problem_type": "regression"}, torch.tensor([0.5, -1.0, 2.0])),
        ("tag", BertForTokenClassification, {"num_labels": 5},
         torch.where(valid & (torch.rand(b, t) < 0.7), torch.randint(0, 5, (b, t)), torch.full((b, t), -100))),
    ):
        model = cls(BertConfig(**base, **extra)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
            out = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask, labels=labels)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
        save_file(state, out_dir / f"{name}_weights.safetensors")
        batch[f"{name}_labels"] = labels
        batch[f"{name}_logits"] = out.logits.contiguous()
        batch[f"{name}_loss"] = out.loss.reshape(1)
    (out_dir / "config.json").write_text(BertConfig(**base).to_json_string())
    save_file(batch, out_dir / "batch.safetensors")
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/heads"))
