"""Forward FLOPs of a transformers BERT counted by torch.utils.flop_counter.FlopCounterMode:
the oracle of pretune's dense-equivalent FLOPs formula (src/mfu/flops.rs, tests/mfu.rs).

usage: flop_count.py pretraining|classification VOCAB HIDDEN LAYERS HEADS INTERMEDIATE BATCH SEQ [LABELS]
prints the total forward FLOPs on a BATCH x SEQ input without padding (randomly initialised
weights; nothing is downloaded).
"""
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForPreTraining, BertForSequenceClassification


def main():
    kind = sys.argv[1]
    vocab, hidden, layers, heads, inter, batch, seq = map(int, sys.argv[2:9])
    labels = int(sys.argv[9]) if len(sys.argv) > 9 else 2
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, max_position_embeddings=max(512, seq), num_labels=labels)
    # Eager attention: its two matmuls are what the counter sees (it has no formula for the
    # CPU's fused SDPA kernel, which would count attention as 0).
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = (BertForPreTraining if kind == "pretraining" else BertForSequenceClassification)(config).eval()
    ids = torch.randint(5, vocab, (batch, seq))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    print(counter.get_total_flops())


if __name__ == "__main__":
    main()
