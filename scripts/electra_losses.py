"""Oracle for ELECTRA's losses: `transformers`' ElectraForMaskedLM (the exported generator,
OUT/generator) and ElectraForPreTraining (the exported discriminator, OUT) on a batch that
pretune wrote (BATCH, safetensors): `input_ids` (the masked input), `token_type_ids`,
`lengths`, `mlm_labels` (the original token at masked positions, -100 elsewhere),
`replaced_input` (the masked input with the generator's samples in place) and `rtd_labels` (1
where `replaced_input` differs from the original). Prints the generator's MLM loss (mean over
masked positions), the discriminator's loss (binary cross-entropy, mean over real tokens, as
`ElectraForPreTraining` computes it) and the generator's logits at the masked positions, as
JSON. Eval mode (no dropout).

    .venv/bin/python scripts/electra_losses.py OUT BATCH
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from safetensors.torch import load_file
from transformers import ElectraForMaskedLM, ElectraForPreTraining


def main(folder, batch_path):
    b = load_file(batch_path)
    t = b["input_ids"].shape[1]
    mask = (torch.arange(t)[None, :] < b["lengths"][:, None]).long()
    gen = ElectraForMaskedLM.from_pretrained(os.path.join(folder, "generator")).eval()
    disc = ElectraForPreTraining.from_pretrained(folder).eval()
    with torch.no_grad():
        g = gen(input_ids=b["input_ids"], attention_mask=mask, token_type_ids=b["token_type_ids"], labels=b["mlm_labels"])
        d = disc(input_ids=b["replaced_input"], attention_mask=mask, token_type_ids=b["token_type_ids"], labels=b["rtd_labels"])
    picked = g.logits[b["mlm_labels"] != -100]
    print(json.dumps({"generator_loss": g.loss.item(), "rtd_loss": d.loss.item(), "generator_logits": picked.flatten().tolist(),
                      "rtd_logits": d.logits[mask.bool()].flatten().tolist()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
