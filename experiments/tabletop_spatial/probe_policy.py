"""Where does a trained tabletop policy go wrong? Two probes on one evaluation seed, on a CPU:

    python experiments/tabletop_spatial/probe_policy.py PRETRAINED_MODEL_DIR --task 0 --seed 1000000 --mode expert
    python experiments/tabletop_spatial/probe_policy.py PRETRAINED_MODEL_DIR --task 0 --seed 1000000 --mode closed

``--mode expert``: the scripted expert drives; every ``--every`` steps the policy predicts a
chunk from the same live observation and its first action is printed beside the expert's
(imitation on the expert's own states: small errors here and failures in closed loop point at
compounding or at states the demos leave ambiguous, not at the inputs).
``--mode closed``: the policy drives (its action queue as in evaluation); each step prints its
action, the TCP, the finger joints and the task object's position.
``--mode state``: the expert drives; every ``--every`` steps the policy predicts from the live
observation and again with the TCP position in the state moved by ``--shift`` metres (one
random direction per probe), the sampling noise the same: how far does a small error in the
state move the action? (Pi0 reads the state through a linear layer, Pi0.5 as 256-bin tokens.)

    python experiments/tabletop_spatial/probe_policy.py PRETRAINED_MODEL_DIR --mode state --shift 0.002 0.005 0.01
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vlaexp.policies.factory import load_pretrained
from vlaexp.sim.tabletop.suite import TabletopSuite
from vlaexp.sim.tabletop.tasks import DEFAULT_MAX_STEPS

COLUMNS = [0, 1, 2, 6]  # dx, dy, dz, gripper


def fmt(x: np.ndarray) -> str:
    return np.array2string(np.asarray(x), precision=3, suppress_small=True)


def first_action(policy, obs: dict, instruction: str) -> np.ndarray:
    """The first action of a fresh chunk, with the same sampling noise every call."""
    policy.reset()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return policy.act_batch([obs], [instruction])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", help="a pretrained_model directory (or run dir / hub id)")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1_000_000, help="an evaluation seed")
    ap.add_argument("--mode", choices=["expert", "closed", "state"], default="expert")
    ap.add_argument(
        "--shift",
        type=float,
        nargs="+",
        default=[0.002, 0.005, 0.01],
        help="state mode: TCP shifts (m)",
    )
    ap.add_argument("--every", type=int, default=5, help="expert mode: steps between probes")
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()

    torch.manual_seed(0)
    policy = load_pretrained(args.policy).eval()
    steps = DEFAULT_MAX_STEPS["spatial"]
    suite = TabletopSuite("tabletop_spatial", steps, "spatial", resolution=args.resolution)
    env, instruction = suite.make_env(args.task), suite.instruction(args.task)
    expert = suite.make_expert(env)
    obs = env.reset(args.seed)
    expert.reset()
    policy.reset()
    # where everything starts (the goal fixture included), to read the printed TCP against
    names = (*env.object_names, *env.task.scene.fixtures)
    print("scene:", {n: fmt(env.body_pos(n)[:2]) for n in names}, instruction)
    errors = []
    moved: dict[float, list[np.ndarray]] = {d: [] for d in args.shift}
    rng = np.random.default_rng(0)
    for t in range(steps):
        state = f"tcp={fmt(obs['state'][:3])} fingers={fmt(obs['state'][6:])}"
        if args.mode == "expert":
            action = expert.act(obs)
            if t % args.every == 0:
                policy.reset()
                guess = policy.act_batch([obs], [instruction])[0]
                errors.append(np.abs(guess - action))
                print(
                    f"t={t:3d} expert={fmt(action[COLUMNS])} policy={fmt(guess[COLUMNS])} {state}"
                )
        elif args.mode == "state":
            action = expert.act(obs)
            if t % args.every == 0:
                base = first_action(policy, obs, instruction)
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                for d in args.shift:
                    shifted = dict(obs, state=obs["state"].copy())
                    shifted["state"][:3] += d * direction
                    moved[d].append(np.abs(first_action(policy, shifted, instruction) - base))
                row = " ".join(f"{d * 1000:g}mm={fmt(moved[d][-1][COLUMNS])}" for d in args.shift)
                print(f"t={t:3d} action={fmt(base[COLUMNS])} |change|: {row}")
        else:
            action = policy.act_batch([obs], [instruction])[0]
            print(
                f"t={t:3d} policy={fmt(action[COLUMNS])} {state} object={fmt(obs['object_position'])}"
            )
        result = env.step(action)
        obs = result.obs
        if result.terminated or result.truncated:
            break
    print(f"success={result.info['success']} steps={t + 1}")
    if errors:
        print("mean |policy - expert| per action dim:", fmt(np.mean(errors, axis=0)))
    for d, changes in moved.items():
        if changes:
            m = np.mean(changes, axis=0)[COLUMNS]
            print(f"TCP moved {d * 1000:g} mm: mean |action change| (dx, dy, dz, gripper) {fmt(m)}")
    env.close()


if __name__ == "__main__":
    main()
