"""Golden fixture for the BERT MLM parity test: Hugging Face `transformers` is the oracle.

Writes OUT/weights.safetensors (a small random BertForMaskedLM, every parameter perturbed so a
swapped or misnamed tensor cannot go unnoticed) and OUT/batch.safetensors (a padded batch with
token types and labels, plus the model's logits, last hidden state and MLM loss in eval mode).

    .venv/bin/python scripts/make_bert_mlm_fixture.py target/fixtures/bert_mlm
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining


def main(out_dir: pathlib.Path) -> None:
    torch.manual_seed(1234)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
                     hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not k.startswith("cls.predictions.decoder.") and not k.endswith("position_ids")}

    b, t = 3, 16
    lengths = torch.tensor([16, 11, 7])
    valid = torch.arange(t)[None, :] < lengths[:, None]
    input_ids = torch.where(valid, torch.randint(5, cfg.vocab_size, (b, t)), torch.zeros(b, t, dtype=torch.long))
    token_type_ids = torch.where(valid & (torch.arange(t)[None, :] >= 4), 1, 0)
    labels = torch.full((b, t), -100)
    pick = valid & (torch.rand(b, t) < 0.3)
    pick[:, 0] = False
    labels[pick] = torch.randint(5, cfg.vocab_size, (int(pick.sum()),))
    attention_mask = valid.long()
    with torch.no_grad():
        out = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                    labels=labels, output_hidden_states=True)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, out_dir / "weights.safetensors")
    save_file({
        "input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
        "lengths": lengths, "labels": labels, "logits": out.logits.contiguous(),
        "hidden": out.hidden_states[-1].contiguous(), "loss": out.loss.reshape(1),
    }, out_dir / "batch.safetensors")
    (out_dir / "config.json").write_text(cfg.to_json_string())
    print(f"wrote {out_dir}: loss {out.loss.item():.6f}")

    # BertForPreTraining (MLM + NSP) on the same batch with next-sentence labels.
    torch.manual_seed(99)
    pre = BertForPreTraining(cfg).eval()
    with torch.no_grad():
        for p in pre.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pre_state = {k: v.contiguous() for k, v in pre.state_dict().items()
                 if not k.startswith("cls.predictions.decoder.") and not k.endswith("position_ids")}
    nsp = torch.tensor([0, 1, 1])
    with torch.no_grad():
        o = pre(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                labels=labels, next_sentence_label=nsp)
    save_file(pre_state, out_dir / "pretraining_weights.safetensors")
    save_file({"next_sentence_label": nsp, "seq_relationship_logits": o.seq_relationship_logits.contiguous(),
               "loss": o.loss.reshape(1)}, out_dir / "pretraining_batch.safetensors")
    print(f"pretraining loss {o.loss.item():.6f}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/bert_mlm"))
