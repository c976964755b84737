"""Golden fixture for the RoBERTa parity tests: Hugging Face `transformers` is the oracle.

A byte-level BPE tokenizer (RoBERTa's kind: `<s>` `<pad>` `</s>` `<unk>` `<mask>` at ids 0-4,
`Ġ` word starts) is trained on the bundled spam set's texts and saved as `tokenizer.json` in
every folder, so a folder is a complete starting point (`[init] hf`).

Writes, for small random RoBERTa models (every parameter perturbed so a swapped or misnamed
tensor cannot go unnoticed; padding id 1, positions from 2, one token type, as roberta-base):
  OUT/config.json, OUT/batch.safetensors (a right-padded batch with MLM labels, class labels,
  tag labels and answer spans),
  OUT/<head>/model.safetensors + OUT/<head>/config.json for RobertaForMaskedLM,
  RobertaForSequenceClassification, RobertaForTokenClassification and
  RobertaForQuestionAnswering (saved by `save_pretrained`, as a user's folder is), and
  OUT/<head>/out.safetensors: the last hidden state, logits and loss in eval mode;
  OUT/plain: a RobertaForMaskedLM as `transformers` initialises it (the fine-tuning test's start);
  OUT/xlmr: an XLMRobertaForMaskedLM likewise, with the Unigram tokenizer (XLM-R's kind).

    .venv/bin/python scripts/make_roberta_fixture.py target/fixtures/roberta
"""
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from safetensors.torch import save_file
from transformers import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                          RobertaForSequenceClassification, RobertaForTokenClassification,
                          XLMRobertaConfig, XLMRobertaForMaskedLM)


def perturbed(cls, cfg, seed):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    root = pathlib.Path(__file__).resolve().parent.parent
    texts = [json.loads(l)["text"] for l in (root / "data/spam/train.jsonl").read_text().splitlines() if l.strip()]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    return tok


ODD_TEXTS = [
    "Hello spam world, buy now!!",
    "naïve café — résumé ½ price; Ünïcödé «quotes» and ‘curly’ ones",
    "emoji 🤖🚀 and CJK 北京欢迎你 and Ω≈ç√",
    "  leading and   repeated   spaces\tand tabs",
    "ﬁ ligature, ＦＵＬＬＷＩＤＴＨ, e\u0301 combining, zero\u200bwidth",
]
ODD_PAIRS = [("Is this spam?", "Buy cheap pills now 💊"), ("naïve question", "¿qué pasa?")]
ODD_WORDS = [["Hello", "naïve", "北京", "🤖", "U.S.A."], ["re-use", "don't", "½"]]


def unigram(texts):
    """An XLM-R-style SentencePiece Unigram tokenizer (`▁` word starts) as a tokenizer.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def tokenizer_oracle(out_dir, bpe_path, unigram_path):
    """What `transformers`' fast tokenizers give on odd text: ids without special tokens, pairs
    with RoBERTa's template, pre-split words (each as in running text, a space before it)."""
    from transformers import RobertaTokenizerFast, XLMRobertaTokenizerFast
    out = {}
    for name, tok in [("bpe", RobertaTokenizerFast(tokenizer_file=str(bpe_path), add_prefix_space=True)),
                      ("unigram", XLMRobertaTokenizerFast(tokenizer_file=str(unigram_path)))]:
        out[name] = {
            "texts": [tok(t, add_special_tokens=False)["input_ids"] for t in ODD_TEXTS],
            "tokens": [tok.convert_ids_to_tokens(tok(t, add_special_tokens=False)["input_ids"]) for t in ODD_TEXTS],
            "pairs": [tok(a, b)["input_ids"] for a, b in ODD_PAIRS],
            # Pre-split words as in running text: each after a space (what `add_prefix_space=True`
            # with `is_split_into_words` gave in transformers 4; 5 loads a tokenizer_file's
            # pre-tokenizer as written and splits "Hello world" as H-e-ll-o w-or-ld instead).
            "words": [[i for w in ws for i in tok((" " + w) if name == "bpe" else w, add_special_tokens=False)["input_ids"]]
                      for ws in ODD_WORDS],
        }
    (out_dir / "tokenizers.json").write_text(json.dumps({"texts": ODD_TEXTS, "pairs": ODD_PAIRS, "words": ODD_WORDS, **out}, ensure_ascii=False))


def main(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    cfg = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=130, type_vocab_size=1,
                        hidden_act="gelu", layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, num_labels=3)
    (out_dir / "config.json").write_text(cfg.to_json_string())
    torch.manual_seed(7)
    b, t = 3, 16
    lengths = torch.tensor([16, 11, 7])
    valid = torch.arange(t)[None, :] < lengths[:, None]
    input_ids = torch.where(valid, torch.randint(5, cfg.vocab_size, (b, t)), torch.full((b, t), 1))
    input_ids[:, 0] = 0
    attention_mask = valid.long()
    mlm_labels = torch.full((b, t), -100)
    pick = valid & (torch.rand(b, t) < 0.3)
    pick[:, 0] = False
    mlm_labels[pick] = torch.randint(4, cfg.vocab_size, (int(pick.sum()),))
    class_labels = torch.tensor([0, 2, 1])
    tag_labels = torch.where(valid, torch.randint(0, 3, (b, t)), torch.full((b, t), -100))
    starts, ends = torch.tensor([3, 2, 1]), torch.tensor([5, 2, 4])
    save_file({"input_ids": input_ids, "attention_mask": attention_mask, "lengths": lengths,
               "mlm_labels": mlm_labels, "class_labels": class_labels, "tag_labels": tag_labels,
               "start_positions": starts, "end_positions": ends}, out_dir / "batch.safetensors")
    heads = [
        ("mlm", RobertaForMaskedLM, dict(labels=mlm_labels)),
        ("cls", RobertaForSequenceClassification, dict(labels=class_labels)),
        ("tag", RobertaForTokenClassification, dict(labels=tag_labels)),
        ("qa", RobertaForQuestionAnswering, dict(start_positions=starts, end_positions=ends)),
    ]
    for i, (name, cls, labels) in enumerate(heads):
        head_cfg = RobertaConfig.from_dict({**{k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")},
                                           "num_labels": 2 if name == "qa" else 3})
        model = perturbed(cls, head_cfg, 100 + i)
        model.save_pretrained(out_dir / name, safe_serialization=True)
        tok.save(str(out_dir / name / "tokenizer.json"))
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **labels)
        logits = torch.stack([out.start_logits, out.end_logits], -1) if name == "qa" else out.logits
        save_file({"hidden": out.hidden_states[-1].contiguous(), "logits": logits.contiguous(),
                   "loss": out.loss.reshape(1)}, out_dir / name / "out.safetensors")
        print(f"{name}: loss {out.loss.item():.6f}")
    # Tokenizers: the BPE above and a Unigram one, with the oracle's ids.
    root = pathlib.Path(__file__).resolve().parent.parent
    texts = [json.loads(l)["text"] for l in (root / "data/spam/train.jsonl").read_text().splitlines() if l.strip()]
    tok.save(str(out_dir / "bpe.json"))
    unigram(texts).save(str(out_dir / "unigram.json"))
    tokenizer_oracle(out_dir, out_dir / "bpe.json", out_dir / "unigram.json")
    # A RobertaForMaskedLM as `transformers` initialises it (no perturbation): the starting
    # point of the fine-tuning test (the perturbed weights above saturate a model this small).
    torch.manual_seed(5)
    plain = RobertaForMaskedLM(cfg).eval()
    plain.save_pretrained(out_dir / "plain", safe_serialization=True)
    tok.save(str(out_dir / "plain" / "tokenizer.json"))
    # An XLM-R folder the same way: XLMRobertaForMaskedLM (model_type "xlm-roberta") with the
    # SentencePiece Unigram tokenizer above, the end-to-end fine-tuning test's start.
    from tokenizers import Tokenizer
    unigram_tok = Tokenizer.from_file(str(out_dir / "unigram.json"))
    xcfg = XLMRobertaConfig(**{**{k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id", "model_type", "architectures")},
                               "vocab_size": unigram_tok.get_vocab_size()})
    torch.manual_seed(6)
    XLMRobertaForMaskedLM(xcfg).eval().save_pretrained(out_dir / "xlmr", safe_serialization=True)
    unigram_tok.save(str(out_dir / "xlmr" / "tokenizer.json"))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/roberta"))
