"""Can a small image policy predict a tokenizer's codes? A CPU proxy for the RVQ policy's
token accuracy (issue 8: > 70% on layers 1-2), to compare tokenizers before GPU time.

One small CNN over the agentview frame, the robot state and the task, with a head per RVQ
layer that sees the embeddings of the true codes of the earlier layers (teacher forcing, as
the RVQ policy's validation accuracy is measured), trained with cross-entropy on the codes of
each frame's action chunk. Every tokenizer gets the same network, seed, data order and
augmentation (random 4-pixel shifts): only the targets differ. Reported on the held-out test
episodes (the tokenizer run's own split): token accuracy per layer, and the MSE of the chunk
decoded from codes predicted layer by layer (greedy, each layer given the predicted earlier
ones) with 2 and with all layers.

    python experiments/rvq_adaptive/code_learnability.py <tokenizer run> [<tokenizer run> ...] \
        --dataset outputs/cache/datasets/<the runs' dataset> --out <name> [--soft-targets T]

``--soft-targets T`` trains on soft targets instead of the one code: layer k's target puts
weight on every code of its codebook by the code's distance to the residual that layer
quantized, ``softmax(-d^2 / (T * m_k))`` with ``m_k`` the median squared distance from a
residual to its own code (a chunk near a boundary between two codes is then not wrong with
either). Evaluation is the same (the argmax against the tokenizer's code).

A diagnostic for experiments/rvq_adaptive (not part of the framework); writes <name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaexp.data.datamodule import open_metadata
from vlaexp.data.episodes import episode_ranges, split_episodes
from vlaexp.tokenizers.rvq import RVQTokenizer
from vlaexp.tokenizers.stages import action_chunks, quantile_normalize


class CodePredictor(nn.Module):
    """Conv features of a 64x64 frame + state + task -> logits of each layer's codes."""

    def __init__(self, state_dim: int, tasks: int, layers: int, codes: int, width: int = 256):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 5, 2, 2), nn.GELU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(),
            nn.Conv2d(128, 128, 3, 2, 1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )  # fmt: skip
        self.task = nn.Embedding(tasks, 32)
        self.trunk = nn.Sequential(nn.Linear(128 * 16 + state_dim + 32, width), nn.GELU())
        self.code_emb = nn.ModuleList(nn.Embedding(codes, width) for _ in range(layers - 1))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, codes))
            for _ in range(layers)
        )

    def features(self, image, state, task):
        return self.trunk(torch.cat([self.conv(image), state, self.task(task)], dim=1))

    def logits(self, h: torch.Tensor, earlier: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer``'s logits from features h and the codes long[B, layer] before it."""
        for k in range(layer):
            h = h + self.code_emb[k](earlier[:, k])
        return self.heads[layer](h)


def load_frames(dataset: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta = open_metadata(None, dataset)
    ds = LeRobotDataset(meta.repo_id, root=meta.root, video_backend="pyav")
    hf = ds.hf_dataset.with_format("numpy")
    images = np.stack(hf["observation.images.agentview"])  # [N, H, W, 3] uint8
    return (
        meta,
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(np.stack(hf["observation.state"]).astype(np.float32)),
        torch.from_numpy(np.asarray(hf["task_index"]).astype(np.int64).reshape(-1)),
        np.stack(hf["action"]).astype(np.float32),
    )


def shift(images: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random shifts of up to ``pad`` pixels (DrQ's augmentation), one per image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=g).tolist()
    return torch.stack(
        [padded[i, :, y : y + h, x : x + w] for i, (x, y) in enumerate(zip(dx, dy, strict=True))]
    )


def soft_targets(
    tok: RVQTokenizer, chunks: torch.Tensor, codes: torch.Tensor, temperature: float | None
) -> torch.Tensor | None:
    """float[N, layers, K] soft targets (``--soft-targets``), or None. The residual layer k
    quantized is the latent minus the codes of the layers before it (vector-quantize-pytorch's
    ResidualVQ without projections: codebook vectors live in the latent space)."""
    if temperature is None:
        return None
    books = tok.rvq.codebooks  # [layers, K, latent_dim]
    residual = tok._latent(chunks)[:, 0]  # [N, latent_dim] (latent_steps = 1)
    out = []
    for k in range(books.shape[0]):
        d2 = torch.cdist(residual, books[k]) ** 2  # [N, K]
        own = d2.gather(1, codes[:, k : k + 1])
        out.append(torch.softmax(-d2 / (temperature * own.median().clamp_min(1e-12)), dim=1))
        residual = residual - books[k][codes[:, k]]
    return torch.stack(out, dim=1)


def run(tok_dir: Path, frames, args) -> dict:
    meta, images, state, task, actions = frames
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(tok_dir / "config.yaml")
    ckpt = torch.load(tok_dir / "tokenizer" / "tokenizer.pt", weights_only=True)
    tok = RVQTokenizer(ckpt["settings"]).eval()
    tok.load_state_dict(ckpt["state_dict"])
    s = tok.settings
    if s.latent_steps != 1:
        raise SystemExit("this proxy predicts one code per layer (latent_steps=1)")
    ranges = episode_ranges(meta)
    splits = split_episodes(sorted(ranges), list(cfg.data.split), cfg.data.split_seed)
    q01, q99 = ckpt["stats"]["q01"].numpy(), ckpt["stats"]["q99"].numpy()
    idx, chunks = {}, {}
    for name in ("train", "test"):
        rs = [ranges[e] for e in splits[name]]
        idx[name] = torch.tensor([i for r in rs for i in r])
        chunks[name] = torch.from_numpy(
            quantile_normalize(action_chunks(actions, rs, s.chunk_size), q01, q99)
        )
    with torch.no_grad():
        codes = {n: tok.encode(c)[:, :, 0] for n, c in chunks.items()}  # [N, layers]
        soft = soft_targets(tok, chunks["train"], codes["train"], args.soft_targets)
        own = {  # the tokenizer's own error on the test chunks (from their true codes)
            k: float(
                ((tok.decode(codes["test"][:, :, None], n_layers=k) - chunks["test"]) ** 2).mean()
            )
            for k in (2, s.layers)
        }
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = CodePredictor(state.shape[1], int(task.max()) + 1, s.layers, s.codebook_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    n_train = len(idx["train"])
    steps = args.epochs * (n_train // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)

    def inputs(rows: torch.Tensor, augment: bool):
        img = images[rows].float() / 127.5 - 1.0
        return (shift(img, g) if augment else img), state[rows], task[rows]

    started, step = time.time(), 0
    model.train()
    for _ in range(args.epochs):
        order = torch.randperm(n_train, generator=g)
        for b in range(n_train // args.batch):
            sel = order[b * args.batch : (b + 1) * args.batch]
            h = model.features(*inputs(idx["train"][sel], augment=True))
            target = codes["train"][sel]
            loss = sum(
                F.cross_entropy(
                    model.logits(h, target, k), target[:, k] if soft is None else soft[sel, k]
                )
                for k in range(s.layers)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    model.eval()
    correct = torch.zeros(s.layers)
    mse_l2 = mse_all = 0.0
    n_test = len(idx["test"])
    with torch.no_grad():
        for b in range(0, n_test, 512):
            rows = idx["test"][b : b + 512]
            true = codes["test"][b : b + 512]
            h = model.features(*inputs(rows, augment=False))
            for k in range(s.layers):  # teacher-forced accuracy
                correct[k] += (model.logits(h, true, k).argmax(-1) == true[:, k]).sum()
            greedy = torch.zeros_like(true)
            for k in range(s.layers):  # each layer from the predicted earlier ones
                greedy[:, k] = model.logits(h, greedy, k).argmax(-1)
            clean = chunks["test"][b : b + 512]
            decoded = tok.decode(greedy[:, :, None], n_layers=2)
            mse_l2 += float(((decoded - clean) ** 2).mean(dim=(1, 2)).sum())
            decoded = tok.decode(greedy[:, :, None])
            mse_all += float(((decoded - clean) ** 2).mean(dim=(1, 2)).sum())
    return {
        "tokenizer": str(tok_dir),
        "fit_input_noise": float(cfg.tokenizer.get("fit_input_noise", 0.0)),
        "soft_targets": args.soft_targets,
        "train_frames": n_train,
        "test_frames": n_test,
        "steps": step,
        "seconds": round(time.time() - started, 1),
        "token_accuracy": (correct / n_test).tolist(),
        "chunk_mse_2_layers": mse_l2 / n_test,
        "chunk_mse_all_layers": mse_all / n_test,
        "tokenizer_mse_2_layers": own[2],
        "tokenizer_mse_all_layers": own[s.layers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", type=Path, nargs="+", help="run dirs of +experiment=rvq_tokenizer_*"
    )
    parser.add_argument(
        "--dataset", type=Path, required=True, help="the dataset they were fitted on"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--soft-targets", type=float, default=None, metavar="T")
    args = parser.parse_args()
    frames = load_frames(args.dataset)
    results = []
    for r in args.runs:
        results.append(run(r, frames, args))
        print(json.dumps(results[-1]))
    layers = len(results[0]["token_accuracy"])
    lines = [
        f"Code predictor (CNN on agentview 64 px + state + task, {args.epochs} epochs, seed "
        f"{args.seed}) on {results[0]['test_frames']} held-out frames; token accuracy per "
        "layer (teacher-forced) and the MSE of the chunk decoded from greedy codes.",
        "",
        "| tokenizer (fit_input_noise) | "
        + " | ".join(f"layer {k + 1}" for k in range(layers))
        + " | chunk MSE, 2 layers (tokenizer's own) | all layers (own) |",
        "|---" * (layers + 3) + "|",
    ]
    for r in results:
        acc = " | ".join(f"{a:.3f}" for a in r["token_accuracy"])
        lines.append(
            f"| `{Path(r['tokenizer']).name}` ({r['fit_input_noise']}"
            + (f"; soft targets T={r['soft_targets']}" if r.get("soft_targets") else "")
            + f") | {acc} | "
            f"{r['chunk_mse_2_layers']:.4f} ({r['tokenizer_mse_2_layers']:.4f}) | "
            f"{r['chunk_mse_all_layers']:.4f} ({r['tokenizer_mse_all_layers']:.4f}) |"
        )
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(results, indent=1))
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
