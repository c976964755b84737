"""Golden fixture for our AdamW: torch.optim.AdamW is the oracle.

Two parameters (a matrix that takes weight decay and a bias that does not, as our
Hugging Face rule assigns them), six updates with random gradients and a changing learning
rate. Writes OUT/batch.safetensors with the initial values, the gradients of every step, the
learning rates, and the parameters and moments after the last step.

    .venv/bin/python scripts/make_adamw_fixture.py target/fixtures/adamw
"""
import pathlib
import sys

import torch
from safetensors.torch import save_file


def main(out_dir: pathlib.Path) -> None:
    torch.manual_seed(7)
    w0, b0 = torch.randn(5, 4), torch.randn(4)
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    lrs = torch.tensor([0.0, 5e-3, 1e-2, 8e-3, 6e-3, 4e-3], dtype=torch.float64)
    grads = {}
    for i, lr in enumerate(lrs.tolist()):
        for g in opt.param_groups:
            g["lr"] = lr
        gw, gb = torch.randn(5, 4) * (i + 1), torch.randn(4) * 0.1
        w.grad, b.grad = gw, gb
        opt.step()
        grads[f"grad_w.{i}"], grads[f"grad_b.{i}"] = gw, gb
    st_w, st_b = opt.state[w], opt.state[b]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"w0": w0, "b0": b0, "lrs": lrs, **grads, "w": w.detach(), "b": b.detach(),
               "exp_avg.w": st_w["exp_avg"], "exp_avg_sq.w": st_w["exp_avg_sq"],
               "exp_avg.b": st_b["exp_avg"], "exp_avg_sq.b": st_b["exp_avg_sq"]},
              out / "batch.safetensors")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/fixtures/adamw"))
