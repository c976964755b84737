"""Golden fixture for the ELECTRA parity tests: Hugging Face `transformers` is the oracle.

Small random ELECTRA discriminators whose embeddings (16 wide) are narrower than the blocks
(32), so `electra.embeddings_project` is exercised, every parameter perturbed so a swapped or
misnamed tensor cannot go unnoticed; the tiny config's WordPiece vocabulary (data/sotu):
  OUT/batch.safetensors: a right-padded batch with class labels, tag labels and answer spans;
  OUT/<head>/{config.json, model.safetensors} for ElectraForSequenceClassification,
  ElectraForTokenClassification and ElectraForQuestionAnswering (saved by `save_pretrained`),
  and OUT/<head>/out.safetensors: the last hidden state, logits and loss in eval mode;
  OUT/discriminator: an ElectraForPreTraining as `transformers` initialises it, with the
  vocabulary beside it (the fine-tuning test's start).

    .venv/bin/python scripts/make_electra_fixture.py target/fixtures/electra
"""
import os
import pathlib
import shutil
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from safetensors.torch import save_file
from transformers import (ElectraConfig, ElectraForPreTraining, ElectraForQuestionAnswering,
                          ElectraForSequenceClassification, ElectraForTokenClassification)


def main(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    root = pathlib.Path(__file__).resolve().parent.parent
    tokenizer = root / "data/sotu/tokenizer.json"
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    base = dict(vocab_size=vocab, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=130, type_vocab_size=2, hidden_act="gelu",
                layer_norm_eps=1e-12, pad_token_id=0)
    torch.manual_seed(11)
    b, t = 3, 16
    lengths = torch.tensor([16, 11, 7])
    valid = torch.arange(t)[None, :] < lengths[:, None]
    input_ids = torch.where(valid, torch.randint(5, vocab, (b, t)), torch.zeros(b, t, dtype=torch.long))
    token_type_ids = torch.where(valid & (torch.arange(t)[None, :] >= 5), 1, 0)
    attention_mask = valid.long()
    class_labels = torch.tensor([0, 2, 1])
    tag_labels = torch.where(valid, torch.randint(0, 3, (b, t)), torch.full((b, t), -100))
    starts, ends = torch.tensor([3, 2, 1]), torch.tensor([5, 2, 4])
    save_file({"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
               "lengths": lengths, "class_labels": class_labels, "tag_labels": tag_labels,
               "start_positions": starts, "end_positions": ends}, out_dir / "batch.safetensors")
    heads = [("cls", ElectraForSequenceClassification, 3, dict(labels=class_labels)),
             ("tag", ElectraForTokenClassification, 3, dict(labels=tag_labels)),
             ("qa", ElectraForQuestionAnswering, 2, dict(start_positions=starts, end_positions=ends))]
    for i, (name, cls, labels, targets) in enumerate(heads):
        torch.manual_seed(200 + i)
        model = cls(ElectraConfig(**base, num_labels=labels)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(out_dir / name, safe_serialization=True)
        with torch.no_grad():
            out = model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                        output_hidden_states=True, **targets)
        logits = torch.stack([out.start_logits, out.end_logits], -1) if name == "qa" else out.logits
        save_file({"hidden": out.hidden_states[-1].contiguous(), "logits": logits.contiguous(),
                   "loss": out.loss.reshape(1)}, out_dir / name / "out.safetensors")
        print(f"{name}: loss {out.loss.item():.6f}")
    torch.manual_seed(5)
    disc = ElectraForPreTraining(ElectraConfig(**base)).eval()
    disc.save_pretrained(out_dir / "discriminator", safe_serialization=True)
    shutil.copy(tokenizer, out_dir / "discriminator" / "tokenizer.json")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/electra"))
