"""Can a policy read its state? A synthetic check on a CPU, a few minutes per run.

The images are blank and the prompt is fixed, so the state is the only input that says what
to do: every action of the chunk is ``tanh(W s)`` for a fixed random ``W`` and a state ``s``
uniform in [-1, 1]^8 (already normalized: q01 = -1, q99 = 1). The tiny policy trains on fresh
batches (AdamW, lr 3e-4 after 50 warmup steps, batch 32); at every quarter of the run it
samples 128 held-out states with zero noise and prints the mean |first action - target|,
beside that of always predicting 0 (the targets' mean).

Pi0 reads the state through a linear layer into the action expert; Pi0.5 reads it as eight
of 256 number tokens in its prompt, rows of a token embedding that is trained from scratch
here:

    python experiments/tabletop_spatial/state_readout.py pi0_tiny null 3200
    python experiments/tabletop_spatial/state_readout.py pi05_tiny null 3200      # torch's N(0, 1)
    python experiments/tabletop_spatial/state_readout.py pi05_tiny 0.02 3200      # Gemma's N(0, 0.02)
    python experiments/tabletop_spatial/state_readout.py pi05_tiny 0.02 3200 ordinal

The second argument is ``policy.embedding_init_std`` (``null``: torch's N(0, 1)); ``ordinal``
then writes the 256 number tokens' rows as cosines of their value (neighbouring bins get
similar rows), at the same scale.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from vlaexp.config.compose import compose_config
from vlaexp.policies.factory import make_policy

STATS = {
    "observation.state": {
        "mean": np.zeros(8),
        "std": np.ones(8),
        "q01": -np.ones(8),
        "q99": np.ones(8),
    },
    "action": {"mean": np.zeros(7), "std": np.ones(7), "q01": -np.ones(7), "q99": np.ones(7)},
}


def main() -> None:
    name, emb_std, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    cfg = compose_config(
        [
            f"policy={name}",
            "policy.image_size=16",
            "policy.tokenizer_max_length=24",
            f"policy.embedding_init_std={emb_std}",
        ]
    )
    pol = make_policy(OmegaConf.to_container(cfg.policy, resolve=True), dataset_stats=STATS)
    if len(sys.argv) > 4 and sys.argv[4] == "ordinal":
        w = pol.model.embed_tokens.weight
        k = torch.arange(w.shape[1], dtype=torch.float32)
        with torch.no_grad():
            for v in range(256):
                tid = pol.tokenizer.convert_tokens_to_ids(f"\u2581{v}")
                w[tid] = torch.cos(torch.pi * (k + 1) * v / 255 / 8) * float(emb_std) * 2**0.5
        print("ordinal init of 256 number tokens", flush=True)
    weights = torch.randn(8, 7, generator=torch.Generator().manual_seed(1)) / math.sqrt(8) * 2

    def batch(b: int, g: torch.Generator) -> dict:
        s = torch.rand(b, 8, generator=g) * 2 - 1
        a = torch.tanh(s @ weights)[:, None, :].expand(b, 10, 7).contiguous()
        img = torch.zeros(b, 3, 16, 16)
        return {
            "observation.images.agentview": img,
            "observation.images.wrist": img,
            "observation.state": s,
            "action": a,
            "action_is_pad": torch.zeros(b, 10, dtype=torch.bool),
            "task": ["pick up the red cube"] * b,
        }

    params = [p for p in pol.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=1e-4)
    g = torch.Generator().manual_seed(2)
    t0 = time.time()
    test = batch(128, torch.Generator().manual_seed(3))
    pol.train()
    for i in range(steps + 1):
        if i % (steps // 4) == 0:
            pol.eval()
            with torch.no_grad():
                pred = pol.predict_action_chunk(test, noise=torch.zeros(128, 10, 8))[:, 0]
            err = (pred - test["action"][:, 0]).abs().mean().item()
            zero = test["action"][:, 0].abs().mean().item()
            print(
                f"{name} emb_std={emb_std} step {i} |pred-target| {err:.3f} "
                f"(predicting 0, the mean: {zero:.3f}) {time.time() - t0:.0f}s",
                flush=True,
            )
            pol.train()
        if i == steps:
            break
        for pg in opt.param_groups:
            pg["lr"] = 3e-4 * min(1, (i + 1) / 50)
        loss, _ = pol(batch(32, g))
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
