"""How long the scripted expert spends in each phase, plain and with DART noise, on a CPU:

    python experiments/tabletop_spatial/dart_phases.py

20 episodes (tasks 0 and 1, 10 training-range seeds each) per setting: plain; noise 0.1 in
every phase; noise only in the transit phases (approach, lift, carry, retreat), 0.1 and 0.15.
A phase that ends on a tolerance and then moves the gripper (descend -> close, lower -> open)
and grows under noise makes the moment of closing or opening chance.
"""

from __future__ import annotations

import collections

from omegaconf import OmegaConf

from vlaexp.config.compose import compose_config
from vlaexp.sim.workers import LocalWorker, SuiteSpec

TRANSIT = ["approach", "lift", "carry", "retreat"]
SETTINGS = [
    ("plain", 0.0, None),
    ("noise 0.1, all phases", 0.1, None),
    ("noise 0.1, transit only", 0.1, TRANSIT),
    ("noise 0.15, transit only", 0.15, TRANSIT),
]


def main() -> None:
    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"]).task_suite
    worker = LocalWorker(SuiteSpec(OmegaConf.to_container(cfg, resolve=True), ["agentview"]))
    for label, sigma, phases in SETTINGS:
        steps: collections.Counter[str] = collections.Counter()
        successes = episodes = 0
        for task in (0, 1):
            for i in range(10):
                worker.send("reset", task, (task + 1) * 7_000_000 + i, True, sigma, phases)
                horizon = worker.recv()["max_steps"]
                for _ in range(horizon):
                    worker.send("step", None)
                    result = worker.recv()
                    steps[result["phase"]] += 1
                    if result["terminated"]:
                        successes += 1
                        break
                episodes += 1
        per_phase = {k: round(v / episodes, 1) for k, v in sorted(steps.items())}
        total = round(sum(steps.values()) / episodes, 1)
        print(f"{label:26s} success {successes}/{episodes}  steps {total}  per phase {per_phase}")
    worker.close()


if __name__ == "__main__":
    main()
