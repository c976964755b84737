"""Golden fixture for the task heads: transformers' BertForSequenceClassification (3 labels),
BertForSequenceClassification with one output (regression) and BertForTokenClassification
(5 labels) on one padded batch, every parameter perturbed; their logits and losses; and
BertForMultipleChoice on 2 examples of 3 choices of different lengths (`mc_*`).

    .venv/bin/python scripts/make_heads_fixture.py target/fixtures/heads
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMultipleChoice, BertForSequenceClassification, BertForTokenClassification


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
    # Multiple choice: [examples, choices, tokens], each choice padded to the longest.
    model = BertForMultipleChoice(BertConfig(**base)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mc_lengths = torch.tensor([[10, 7, 12], [4, 9, 6]])
    mc_valid = torch.arange(t)[None, None, :] < mc_lengths[:, :, None]
    mc_ids = torch.where(mc_valid, torch.randint(5, 50, (2, 3, t)), torch.zeros(2, 3, t, dtype=torch.long))
    mc_types = torch.where(mc_valid & (torch.arange(t)[None, None, :] >= 3), 1, 0)
    mc_labels = torch.tensor([2, 0])
    with torch.no_grad():
        out = model(input_ids=mc_ids, token_type_ids=mc_types, attention_mask=mc_valid.long(), labels=mc_labels)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}, out_dir / "mc_weights.safetensors")
    batch.update({"mc_input_ids": mc_ids, "mc_token_type_ids": mc_types, "mc_lengths": mc_lengths, "mc_labels": mc_labels,
                  "mc_logits": out.logits.contiguous(), "mc_loss": out.loss.reshape(1)})
    (out_dir / "config.json").write_text(BertConfig(**base).to_json_string())
    save_file(batch, out_dir / "batch.safetensors")
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/heads"))
