"""Random BERT, RoBERTa, ELECTRA and ModernBERT folders of one size, for the per-architecture
throughput comparison (scripts/bench-encoders.sh): MiniLM's shape (6 layers, width 384, 12
heads, FFN 1536; ELECTRA with its usual narrower embeddings, 128; ModernBERT with a GeGLU of
1,024, whose three matrices hold as many weights as BERT's two of 1,536, global attention
every third layer and a window of 64 on each side elsewhere), each as `transformers` initialises it,
saved with `save_pretrained` with MiniLM's WordPiece `tokenizer.json` beside it (throughput
does not depend on the vocabulary's kind, and both sides read the same ids).

    .venv/bin/python scripts/make_encoder_folders.py OUT
"""
import os
import pathlib
import shutil
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from transformers import (BertConfig, BertForQuestionAnswering, ElectraConfig, ElectraForQuestionAnswering,
                          ModernBertConfig, ModernBertForQuestionAnswering, RobertaConfig, RobertaForQuestionAnswering)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(out: pathlib.Path) -> None:
    shape = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    folders = {
        "bert": BertForQuestionAnswering(BertConfig(**shape, max_position_embeddings=512)),
        "roberta": RobertaForQuestionAnswering(RobertaConfig(**shape, max_position_embeddings=514, type_vocab_size=1,
                                                             pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)),
        "electra": ElectraForQuestionAnswering(ElectraConfig(**shape, embedding_size=128, max_position_embeddings=512)),
        # MiniLM's WordPiece ids: [PAD] 0, [CLS] 101, [SEP] 102.
        "modernbert": ModernBertForQuestionAnswering(ModernBertConfig(**{**shape, "intermediate_size": 1024}, local_attention=128,
                                                                      global_attn_every_n_layers=3, max_position_embeddings=512,
                                                                      pad_token_id=0, cls_token_id=101, sep_token_id=102,
                                                                      bos_token_id=101, eos_token_id=102)),
    }
    for name, model in folders.items():
        torch.manual_seed(1)
        model.save_pretrained(out / name, safe_serialization=True)
        shutil.copy(ROOT / ".cache/minilm/model/tokenizer.json", out / name / "tokenizer.json")
        print(name, sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
