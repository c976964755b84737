"""Golden fixture for the ModernBERT parity test: Hugging Face `transformers` is the oracle.

A small random ModernBertForMaskedLM (4 layers: global attention at layers 0 and 3, a sliding
window of 4 on each side at layers 1 and 2 (local_attention 8), RoPE thetas 160,000 / 10,000,
GeGLU, pre-norm LayerNorms without biases; every parameter perturbed so a swapped or misnamed
tensor cannot go unnoticed) on a right-padded batch of sequences up to 24 tokens, longer than
the window, so the sliding window is exercised. Writes OUT/mlm/{config.json, model.safetensors}
(`save_pretrained`, as a user's folder is) and OUT/mlm/out.safetensors: input_ids, lengths,
the last hidden state and the logits in eval mode; OUT/cls-cls and OUT/cls-mean: a
ModernBertForSequenceClassification (3 labels) pooling the first token / the mean of the real
ones, with its logits on the same batch; OUT/tag and OUT/qa: ModernBertForTokenClassification
(3 tags) and ModernBertForQuestionAnswering with their per-token logits (QA's start and end
stacked on the last axis). Each head's loss on labels saved beside it (`mlm_labels`: 30 % of
the real tokens, as ModernBERT masks; a class per row; a tag per real token; a start and an
end) is in its out.safetensors as `loss`.

OUT/plain: a ModernBertForMaskedLM as `transformers` initialises it (no perturbation; 4 layers
of width 64, a window of 8 on each side) with a byte-level BPE `tokenizer.json` trained on the
bundled spam texts with ModernBERT's specials ([CLS] A [SEP]), the start of the end-to-end
fine-tuning and continued pre-training tests.

    .venv/bin/python scripts/make_modernbert_fixture.py target/fixtures/modernbert
"""
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from safetensors.torch import save_file
from transformers import (ModernBertConfig, ModernBertForMaskedLM, ModernBertForQuestionAnswering,
                          ModernBertForSequenceClassification, ModernBertForTokenClassification)


def tokenizer():
    """A byte-level BPE with ModernBERT's special tokens and its `[CLS] A [SEP]` template."""
    from tokenizers import ByteLevelBPETokenizer, processors
    root = pathlib.Path(__file__).resolve().parent.parent
    texts = [json.loads(l)["text"] for l in (root / "data/spam/train.jsonl").read_text().splitlines() if l.strip()]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=2,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    tok.post_processor = processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def plain(out_dir: pathlib.Path) -> None:
    tok = tokenizer()
    cfg = ModernBertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                           num_attention_heads=4, local_attention=16, global_attn_every_n_layers=3, max_position_embeddings=256,
                           pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3)
    torch.manual_seed(5)
    ModernBertForMaskedLM(cfg).eval().save_pretrained(out_dir / "plain", safe_serialization=True)
    tok.save(str(out_dir / "plain" / "tokenizer.json"))


def main(out_dir: pathlib.Path) -> None:
    plain(out_dir)
    cfg = ModernBertConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                           local_attention=8, global_attn_every_n_layers=3, max_position_embeddings=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    torch.manual_seed(11)
    model = ModernBertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.1))
    lengths = torch.tensor([24, 17, 9])
    b, t = 3, 24
    valid = torch.arange(t)[None, :] < lengths[:, None]
    input_ids = torch.where(valid, torch.randint(3, cfg.vocab_size, (b, t)), torch.zeros(b, t, dtype=torch.long))
    mlm_labels = torch.full((b, t), -100)
    pick = valid & (torch.rand(b, t) < 0.3)
    mlm_labels[pick] = torch.randint(3, cfg.vocab_size, (int(pick.sum()),))
    class_labels = torch.tensor([0, 2, 1])
    tag_labels = torch.where(valid, torch.randint(0, 3, (b, t)), torch.full((b, t), -100))
    starts, ends = torch.tensor([3, 2, 1]), torch.tensor([5, 2, 4])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=valid.long(), output_hidden_states=True, labels=mlm_labels)
        hidden = model.model(input_ids=input_ids, attention_mask=valid.long()).last_hidden_state
    mlm = out_dir / "mlm"
    model.save_pretrained(mlm, safe_serialization=True)
    save_file({"input_ids": input_ids, "lengths": lengths, "hidden": hidden.contiguous(), "logits": out.logits.contiguous(),
               "mlm_labels": mlm_labels, "class_labels": class_labels, "tag_labels": tag_labels,
               "start_positions": starts, "end_positions": ends, "loss": out.loss.reshape(1)}, mlm / "out.safetensors")
    # Sequence classification, pooling the first token and the mean of the real ones.
    for pooling in ("cls", "mean"):
        ccfg = ModernBertConfig.from_dict({**cfg.to_dict(), "classifier_pooling": pooling, "num_labels": 3})
        torch.manual_seed(12)
        clf = ModernBertForSequenceClassification(ccfg).eval()
        with torch.no_grad():
            for p in clf.parameters():
                p.add_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.1))
            out = clf(input_ids=input_ids, attention_mask=valid.long(), labels=class_labels)
        clf.save_pretrained(out_dir / f"cls-{pooling}", safe_serialization=True)
        save_file({"logits": out.logits.contiguous(), "loss": out.loss.reshape(1)}, out_dir / f"cls-{pooling}" / "out.safetensors")
    # Token classification (3 tags) and question answering (start and end logits, stacked).
    for name, cls, labels in (("tag", ModernBertForTokenClassification, 3), ("qa", ModernBertForQuestionAnswering, 2)):
        torch.manual_seed(13)
        model = cls(ModernBertConfig.from_dict({**cfg.to_dict(), "num_labels": labels})).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * (0.2 if p.dim() > 1 else 0.1))
            labels = dict(start_positions=starts, end_positions=ends) if name == "qa" else dict(labels=tag_labels)
            out = model(input_ids=input_ids, attention_mask=valid.long(), **labels)
        logits = torch.stack([out.start_logits, out.end_logits], -1) if name == "qa" else out.logits
        model.save_pretrained(out_dir / name, safe_serialization=True)
        save_file({"logits": logits.contiguous(), "loss": out.loss.reshape(1)}, out_dir / name / "out.safetensors")
    print(f"layer types {cfg.layer_types}, sliding window {cfg.sliding_window}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/modernbert"))
