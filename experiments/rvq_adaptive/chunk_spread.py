"""How much of a DART demo's action chunk is decided at the frame it is predicted from?

A chunk of the DART demos (experiments/rvq_adaptive, tabletop_spatial's recipe) holds the
expert's actions for ``chunk_size`` steps, and from the second step on they react to the
Gaussian noise the env adds to the executed actions, noise not yet drawn at the chunk's first
frame. This replays demos to a frame (same seed, same noise: the same state) and continues
each from there under several fresh noise draws and once without noise, recording the
expert's actions: the chunks a policy at that frame could be asked to predict. Reported: how
often two such chunks get the same code of a tokenizer at layer 1, and at layer 2 where layer
1 agrees (the ceiling on token accuracy that this spread sets), and their mean squared
difference in the tokenizer's normalized units beside its own reconstruction error.

    python experiments/rvq_adaptive/chunk_spread.py <tokenizer run> --out <name> \
        [--seeds 10 --frames 10,25,40,55 --branches 6]

A diagnostic for experiments/rvq_adaptive (not part of the framework); writes <name>.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vlaexp.sim.workers import LocalWorker, SuiteSpec
from vlaexp.tokenizers.rvq import RVQTokenizer
from vlaexp.tokenizers.stages import quantile_normalize


def continuation(worker, task, seed, frame, steps, noise, phases, branch):
    """The expert's actions for ``steps`` steps from ``frame`` of episode ``seed`` of ``task``,
    replayed with the collect stage's noise (the env worker's own DART injection), the noise
    after ``frame`` drawn from stream ``branch`` (None: no noise after it). None if the episode
    ends first."""
    worker.send("reset", task, seed, True, noise, phases)
    worker.recv()
    actions = []
    for t in range(frame + steps):
        if t == frame:
            worker.send("reseed_noise", None if branch is None else [seed, frame, branch])
            worker.recv()
        worker.send("step", None)  # the expert acts
        result = worker.recv()
        if t >= frame:
            actions.append(result["action"])
        if (result["terminated"] or result["truncated"]) and t < frame + steps - 1:
            return None
    return np.stack(actions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a +experiment=rvq_tokenizer_* run on DART demos")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=10, help="episodes per task")
    ap.add_argument("--frames", default="10,25,40,55")
    ap.add_argument("--branches", type=int, default=6)
    args = ap.parse_args()
    cfg = OmegaConf.load(args.run / "config.yaml")
    ckpt = torch.load(args.run / "tokenizer" / "tokenizer.pt", weights_only=True)
    tok = RVQTokenizer(ckpt["settings"]).eval()
    tok.load_state_dict(ckpt["state_dict"])
    q01, q99 = ckpt["stats"]["q01"].numpy(), ckpt["stats"]["q99"].numpy()
    collect = cfg.data.collect
    noise = float(collect.action_noise)
    phases = None if collect.action_noise_phases is None else list(collect.action_noise_phases)
    if noise <= 0:
        raise SystemExit("the tokenizer run's demos have no DART noise (data.collect.action_noise)")
    spec = SuiteSpec(OmegaConf.to_container(cfg.task_suite, resolve=True), ["agentview"])
    worker = LocalWorker(spec)
    frames = [int(f) for f in args.frames.split(",")]
    steps = tok.settings.chunk_size
    tasks = collect.task_ids if collect.task_ids is not None else spec.build().task_ids
    rows = []
    for task in tasks:
        for i in range(args.seeds):
            seed = 777_000 + 1000 * int(task) + i  # not the recorded episodes' seeds
            for frame in frames:
                chunks = [
                    continuation(worker, int(task), seed, frame, steps, noise, phases, b)
                    for b in [None, *range(args.branches)]
                ]
                if any(c is None for c in chunks):
                    continue
                # the replay reaches the same state every time: the chunks' first actions agree
                first = np.stack([c[0] for c in chunks])
                if not np.allclose(first, first[0], atol=1e-6):
                    raise SystemExit(f"task {task} seed {seed}: the replay is not deterministic")
                norm = torch.from_numpy(quantile_normalize(np.stack(chunks), q01, q99)).float()
                with torch.no_grad():
                    codes = tok.encode(norm)[:, :, 0]  # [1 + branches, layers]
                    own = float(((tok.decode(codes[:, :, None]) - norm) ** 2).mean())
                rows.append({"task": int(task), "seed": seed, "frame": frame,
                             "codes": codes.tolist(), "chunks": norm.tolist(), "own_mse": own})  # fmt: skip
    worker.close()
    l1 = l2 = n1 = n2 = 0
    spread, vs_clean, modal1, modal12 = [], [], [], []
    for r in rows:
        codes, norm = np.array(r["codes"]), np.array(r["chunks"])
        # the accuracy of always predicting the commonest code among the draws (an estimate,
        # high with few draws, of the best a policy at this frame can do)
        noisy = [tuple(c[:2]) for c in codes[1:]]
        modal1.append(max(np.bincount(codes[1:, 0])) / len(noisy))
        modal12.append(max(noisy.count(c) for c in set(noisy)) / len(noisy))
        for a, b in itertools.combinations(range(1, len(codes)), 2):  # noisy branches
            n1 += 1
            l1 += codes[a, 0] == codes[b, 0]
            if codes[a, 0] == codes[b, 0]:
                n2 += 1
                l2 += codes[a, 1] == codes[b, 1]
            spread.append(float(((norm[a] - norm[b]) ** 2).mean()))
        vs_clean += [float(((norm[a] - norm[0]) ** 2).mean()) for a in range(1, len(norm))]
    result = {
        "tokenizer": str(args.run),
        "action_noise": noise,
        "chunk_starts": len(rows),
        "branches": args.branches,
        "layer1_agreement": l1 / max(n1, 1),
        "layer2_agreement_given_layer1": l2 / max(n2, 1),
        "modal_share_layer1": float(np.mean(modal1)),
        "modal_share_layers_1_2": float(np.mean(modal12)),
        "pair_mse_median": float(np.median(spread)),
        "pair_mse_mean": float(np.mean(spread)),
        "vs_noise_free_mse_mean": float(np.mean(vs_clean)),
        "tokenizer_own_mse_mean": float(np.mean([r["own_mse"] for r in rows])),
    }
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"Chunks from one frame under {args.branches} fresh DART noise draws (sigma {noise}), "
        f"{len(rows)} frames of {args.seeds} episodes a task, tokenizer `{args.run.name}`",
        "",
        "| layer-1 codes agree | layer 2 agrees where layer 1 does | commonest code's share, "
        "layer 1 / layers 1-2 | chunk MSE between draws (median / mean) | vs the noise-free "
        "continuation | tokenizer's own MSE |",
        "|---|---|---|---|---|---|",
        f"| {result['layer1_agreement']:.3f} | {result['layer2_agreement_given_layer1']:.3f} | "
        f"{result['modal_share_layer1']:.3f} / {result['modal_share_layers_1_2']:.3f} | "
        f"{result['pair_mse_median']:.4f} / {result['pair_mse_mean']:.4f} | "
        f"{result['vs_noise_free_mse_mean']:.4f} | {result['tokenizer_own_mse_mean']:.4f} |",
    ]
    args.out.with_name(args.out.name + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
