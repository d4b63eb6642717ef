"""One episode of any actor (scripted expert or policy) in a SimEnv."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaexp.sim.base import SimEnv

Actor = Callable[[dict[str, Any]], np.ndarray]


@dataclass
class Episode:
    """``observations[i]`` is what the actor saw before ``actions[i]``; rewards follow actions."""

    seed: int
    task_id: int
    instruction: str
    observations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    success: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the last step's info

    @property
    def steps(self) -> int:
        return len(self.actions)


def rollout(
    env: SimEnv,
    actor: Actor,
    seed: int,
    max_steps: int | None = None,
    keep_observations: bool = True,
    after_reset: Callable[[], None] | None = None,
) -> Episode:
    """Run until success or the horizon; ``keep_observations=False`` keeps only the last one.

    ``after_reset`` runs once the env is reset (a scripted expert plans from that state).
    """
    horizon = max_steps or env.max_steps
    obs = env.reset(seed)
    if after_reset is not None:
        after_reset()
    ep = Episode(seed=seed, task_id=env.task_id, instruction=env.instruction)
    for _ in range(horizon):
        action = np.asarray(actor(obs), dtype=np.float32)
        if keep_observations:
            ep.observations.append(obs)
        ep.actions.append(action)
        result = env.step(action)
        ep.rewards.append(float(result.reward))
        ep.info = result.info
        obs = result.obs
        if result.terminated:
            ep.success = True
            break
        if result.truncated:
            break
    if not keep_observations:
        ep.observations = [obs]
    return ep
