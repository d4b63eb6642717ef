"""Where does a trained tabletop policy go wrong? Two probes on one evaluation seed, on a CPU:

    python experiments/tabletop_spatial/probe_policy.py PRETRAINED_MODEL_DIR --task 0 --seed 1000000 --mode expert
    python experiments/tabletop_spatial/probe_policy.py PRETRAINED_MODEL_DIR --task 0 --seed 1000000 --mode closed

``--mode expert``: the scripted expert drives; every ``--every`` steps the policy predicts a
chunk from the same live observation and its first action is printed beside the expert's
(imitation on the expert's own states: small errors here and failures in closed loop point at
compounding or at states the demos leave ambiguous, not at the inputs).
``--mode closed``: the policy drives (its action queue as in evaluation); each step prints its
action, the TCP, the finger joints and the task object's position.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("policy", help="a pretrained_model directory (or run dir / hub id)")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1_000_000, help="an evaluation seed")
    ap.add_argument("--mode", choices=["expert", "closed"], default="expert")
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
    env.close()


if __name__ == "__main__":
    main()
