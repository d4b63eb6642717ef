"""How stable are a fitted RVQ tokenizer's codes under small action errors? Held-out action
chunks (the tokenizer_fit stage's test split, normalized to [-1, 1]) are perturbed with
Gaussian noise of std sigma per value, re-encoded, and each layer's codes compared with the
clean chunk's: unconditionally, and given that every earlier layer's code still agrees (what a
policy teacher-forced on the true earlier codes faces). A policy whose predicted chunk is off
by sigma cannot expect a layer's token accuracy above that agreement, so it bounds the
token-accuracy target (issue 8: > 70% for layers 1-2) from the action precision it needs.

    python experiments/rvq_adaptive/code_stability.py <tokenizer_fit run dir> \
        --dataset outputs/cache/datasets/<the run's dataset> --out <name>

A diagnostic for experiments/rvq_adaptive (not part of the framework); writes <name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vlaexp.data.datamodule import open_metadata
from vlaexp.data.episodes import episode_ranges, split_episodes
from vlaexp.tokenizers.rvq import RVQTokenizer
from vlaexp.tokenizers.stages import split_chunks

SIGMAS = (0.005, 0.01, 0.02, 0.05, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run dir of +experiment=rvq_tokenizer_*")
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset it was fitted on")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=5, help="noise draws per sigma")
    args = parser.parse_args()
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(args.run / "config.yaml")
    ckpt = torch.load(args.run / "tokenizer" / "tokenizer.pt", weights_only=True)
    tok = RVQTokenizer(ckpt["settings"]).eval()
    tok.load_state_dict(ckpt["state_dict"])
    meta = open_metadata(None, args.dataset)
    ds = LeRobotDataset(meta.repo_id, root=meta.root, video_backend="pyav")
    actions = np.stack(ds.hf_dataset.with_format("numpy")[cfg.data.action_key]).astype(np.float32)
    ranges = episode_ranges(meta)
    splits = split_episodes(sorted(ranges), list(cfg.data.split), cfg.data.split_seed)
    q01, q99 = ckpt["stats"]["q01"].numpy(), ckpt["stats"]["q99"].numpy()
    test = split_chunks(actions, ranges, splits, tok.settings.chunk_size, q01, q99)["test"]
    x = torch.from_numpy(test)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        clean = tok.encode(x)  # [N, layers, steps]
        rows = []
        for sigma in SIGMAS:
            same, given = [], []
            for _ in range(args.draws):
                noisy = (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)
                eq = (tok.encode(noisy) == clean).all(dim=2)  # [N, layers]: a layer's codes
                before = torch.cumprod(eq.int(), dim=1).bool()  # layers 1..l all agree
                prior = torch.cat([torch.ones_like(eq[:, :1]), before[:, :-1]], dim=1)
                same.append(eq.float().mean(0))
                given.append((eq & prior).sum(0).float() / prior.sum(0).clamp_min(1))
            rows.append(
                {
                    "sigma": sigma,
                    "noise_mse": sigma**2,
                    "agree": torch.stack(same).mean(0).tolist(),
                    "agree_given_earlier": torch.stack(given).mean(0).tolist(),
                }
            )
    result = {"run": str(args.run), "test_chunks": len(test), "draws": args.draws, "rows": rows}
    layers = tok.settings.layers
    lines = [
        f"{len(test)} held-out chunks of `{args.run}`, {args.draws} noise draws per sigma; "
        "share of chunks whose layer-l codes survive the noise (given layers < l agree).",
        "",
        "| sigma (noise MSE) | " + " | ".join(f"layer {k + 1}" for k in range(layers)) + " |",
        "|---" * (layers + 1) + "|",
    ]
    for r in rows:
        cells = [
            f"{a:.2f} ({c:.2f})" for a, c in zip(r["agree"], r["agree_given_earlier"], strict=True)
        ]
        lines.append(f"| {r['sigma']} ({r['noise_mse']:.5f}) | " + " | ".join(cells) + " |")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
