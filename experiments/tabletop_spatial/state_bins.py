"""Which state tokens does a Pi0.5 see, under the expert and in its own closed loop? On a CPU:

    python experiments/tabletop_spatial/state_bins.py PRETRAINED_MODEL_DIR --seeds 3
    python experiments/tabletop_spatial/state_bins.py --quantiles 12   # no policy: the stats

Pi0.5 writes each state value, quantile-normalized (q01/q99 -> -1/1) and cut into 256 bins, as
a number token of its prompt. For every state dimension this prints, over the episodes of the
scripted expert (the demonstrations' distribution) and of the policy acting: the bins' range,
how many distinct bins appeared, the share of steps outside q01..q99 (bins -1 and 255) and the
mean |bin change| from one step to the next. A dimension whose q01..q99 range is tiny (a nearly
constant value) or that wraps (axis-angle near pi) turns small motions into jumps of many bins.

``--quantiles N`` (no policy): over N expert episodes of each of tasks 0 and 1, the dataset's
own 1% / 99% quantiles of the state against LeRobot's aggregate (the frame-weighted mean of the
episodes' quantiles, what meta/stats.json holds), and the share of frames outside each.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vlaexp.policies.factory import load_pretrained
from vlaexp.policies.pi0.prompt import discretize_state
from vlaexp.sim.tabletop.suite import TabletopSuite
from vlaexp.sim.tabletop.tasks import DEFAULT_MAX_STEPS

NAMES = ["tcp_x", "tcp_y", "tcp_z", "aa_x", "aa_y", "aa_z", "finger_l", "finger_r"]


def bins_of(policy, states: np.ndarray) -> np.ndarray:
    normed = policy.normalizer.normalize("observation.state", torch.as_tensor(states).float())
    return discretize_state(normed.numpy())


def rollout(suite, policy, task: int, seed: int) -> tuple[np.ndarray, bool]:
    """The states of one episode, driven by ``policy`` or, when it is None, the expert."""
    env, instruction = suite.make_env(task), suite.instruction(task)
    expert = suite.make_expert(env)
    obs = env.reset(seed)
    expert.reset()
    if policy is not None:
        policy.reset()
    states = []
    for _ in range(suite.max_steps):
        states.append(obs["state"].copy())
        act = expert.act(obs) if policy is None else policy.act_batch([obs], [instruction])[0]
        result = env.step(act)
        obs = result.obs
        if result.terminated or result.truncated:
            break
    env.close()
    return np.stack(states), bool(result.info["success"])


def quantile_check(suite, n: int) -> None:
    episodes = [rollout(suite, None, task, seed)[0] for task in (0, 1) for seed in range(n)]
    frames = np.concatenate(episodes)
    weights = np.array([len(e) for e in episodes])[:, None] / len(frames)
    rows = {
        "dataset": np.quantile(frames, [0.01, 0.99], axis=0),
        "LeRobot aggregate": [
            (np.stack([np.quantile(e, q, axis=0) for e in episodes]) * weights).sum(0)
            for q in (0.01, 0.99)
        ],
    }
    print(f"{len(episodes)} expert episodes, {len(frames)} frames")
    for name, (lo, hi) in rows.items():
        outside = np.mean((frames < lo) | (frames > hi), axis=0)
        print(f"{name:18s} q01 {np.array2string(lo, precision=4)}")
        print(f"{'':18s} q99 {np.array2string(hi, precision=4)}")
        print(
            f"{'':18s} frames outside: "
            + " ".join(f"{n}={o:.0%}" for n, o in zip(NAMES, outside, strict=True))
        )


def summary(bins: list[np.ndarray]) -> list[str]:
    flat = np.concatenate(bins)
    jumps = np.concatenate([np.abs(np.diff(b, axis=0)) for b in bins])
    rows = []
    for d, name in enumerate(NAMES):
        col = flat[:, d]
        rows.append(
            f"  {name:9s} bins {col.min():4d}..{col.max():4d}  distinct {len(np.unique(col)):3d}  "
            f"outside q01..q99 {np.mean((col < 0) | (col > 254)):5.1%}  "
            f"mean |step change| {jumps[:, d].mean():6.2f} bins"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", nargs="?", help="a Pi0.5 pretrained_model directory")
    ap.add_argument("--quantiles", type=int, default=0, help="expert episodes per task")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds from 1,000,000")
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()
    suite = TabletopSuite(
        "tabletop_spatial", DEFAULT_MAX_STEPS["spatial"], "spatial", resolution=args.resolution
    )
    if args.quantiles:
        quantile_check(suite, args.quantiles)
    if not args.policy:
        return
    torch.manual_seed(0)
    policy = load_pretrained(args.policy).eval()
    stats = policy.normalizer
    for name in ("q01", "q99"):
        buf = getattr(stats, stats._name("observation.state", name), None)
        if buf is not None:
            print(f"state {name}:", np.array2string(buf.numpy(), precision=4))
    for driver in ("expert", "policy"):
        bins, wins = [], 0
        for k in range(args.seeds):
            driver_policy = policy if driver == "policy" else None
            states, success = rollout(suite, driver_policy, args.task, 1_000_000 + k)
            bins.append(bins_of(policy, states))
            wins += success
        print(f"{driver} drives: {args.seeds} episodes of task {args.task}, {wins} successes")
        print("\n".join(summary(bins)))


if __name__ == "__main__":
    main()
