"""Reference actors for the SimRunner: the suite's scripted expert and a random policy."""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaexp.sim.base import ACTION_DIM


class ScriptedExpert:
    """Marker: every env worker acts with its suite's own scripted expert (privileged state)."""


class RandomPolicy:
    """Uniform actions in [-1, 1]: the floor every learned policy must beat."""

    def __init__(self, seed: int = 0, action_dim: int = ACTION_DIM) -> None:
        self.rng = np.random.default_rng(seed)
        self.action_dim = action_dim

    def reset(self) -> None:
        """Nothing to forget between episodes."""

    def act_batch(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        """float32[B, action_dim]."""
        return self.rng.uniform(-1.0, 1.0, (len(observations), self.action_dim)).astype(np.float32)
