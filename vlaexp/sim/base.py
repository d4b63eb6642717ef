"""The simulation contract every task suite implements.

A :class:`TaskSuite` knows its tasks (ids, language instructions, fixed evaluation seeds),
its horizon and cameras, and builds one :class:`SimEnv` per task. Offline suites also
provide a scripted :class:`Expert` that acts from privileged simulator state.

Observations follow LIBERO's contract as LeRobot and openpi consume it::

    obs = {
        "images": {"agentview": uint8[H, W, 3], "wrist": uint8[H, W, 3]},  # selected cameras
        "state": float32[8],  # eef xyz, eef axis-angle (3), two finger positions
    }

Actions are float32[7] in [-1, 1]: xyz delta, rotation delta (axis-angle), gripper
(-1 open, +1 close), as LIBERO's OSC_POSE controller interprets them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaexp.errors import ConfigError

ACTION_DIM = 7
STATE_DIM = 8
CAMERA_NAMES = ("agentview", "wrist")
_SEED_STRIDE = 1_000_000
# never_grasped: the target object was never lifted; dropped: it was lifted, then lost
# before the goal; missed_goal: carried to the wrong place or goal state not reached;
# timeout: anything else that ran out of steps.
FAILURE_MODES = ("never_grasped", "dropped", "missed_goal", "timeout")


@dataclass
class StepResult:
    """What :meth:`SimEnv.step` returns (gymnasium's 5-tuple, named)."""

    obs: dict[str, Any]
    reward: float
    terminated: bool  # the task's success predicate holds
    truncated: bool  # the horizon ran out
    info: dict[str, Any] = field(default_factory=dict)


class SimEnv(ABC):
    """One task's environment. Build it in the process that uses it (after fork)."""

    task_id: int
    instruction: str
    max_steps: int
    cameras: tuple[str, ...]

    @abstractmethod
    def reset(self, seed: int) -> dict[str, Any]:
        """Sample the initial layout deterministically from ``seed``; return the first obs."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply one float32[7] action in [-1, 1] (values outside are clipped) at 20 Hz."""

    @abstractmethod
    def is_success(self) -> bool:
        """The task's success predicate, evaluated on the current simulator state."""

    @abstractmethod
    def close(self) -> None:
        """Free renderers and simulator handles."""

    def failure_mode(self) -> str:
        """Why the current (unsuccessful) episode failed, from privileged state.

        One of :data:`FAILURE_MODES`. Envs that cannot tell say ``"timeout"``.
        """
        return "timeout"

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Expert(ABC):
    """A scripted policy acting from privileged state of the env it was built for.

    ``phase`` names what its last action was doing (e.g. ``approach``, ``descend``,
    ``carry``, ``lower``), "" where it does not say.
    """

    phase: str = ""

    def info(self) -> dict[str, Any]:
        """What was injected this episode: ``fault`` (None for an expert without faults),
        ``fault_step`` (the step it took effect; None if it never did) and ``action_noise``
        (the std of the noise its actions got; None for an expert that does not say)."""
        return {"fault": None, "fault_step": None, "action_noise": None}

    @staticmethod
    def check_action_noise(perturbation: Any) -> None:
        """The expert's action noise settings, checked when an expert is built."""
        if perturbation.action_noise < 0:
            raise ValueError(f"action_noise={perturbation.action_noise} must be >= 0")
        prob = float(getattr(perturbation, "action_noise_prob", 1.0))
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"action_noise_prob={prob} must be in [0, 1]")

    @staticmethod
    def draws_action_noise(perturbation: Any, seed: int) -> bool:
        """Whether the episode of ``seed`` gets ``perturbation.action_noise`` (settings checked
        by :meth:`check_action_noise`): with probability ``action_noise_prob``, from a stream
        of the seed's own (the fault draw is unchanged)."""
        prob = float(getattr(perturbation, "action_noise_prob", 1.0))
        if perturbation.action_noise <= 0:
            return False
        return prob >= 1.0 or bool(np.random.default_rng([seed, 5]).random() < prob)

    @abstractmethod
    def reset(self) -> None:
        """Forget the plan; call after every ``env.reset``."""

    @abstractmethod
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """Return the next float32[7] action in [-1, 1]."""


class TaskSuite(ABC):
    """A benchmark suite: tasks, horizons, cameras, instruction text and (maybe) experts."""

    # names the scripted expert's `phase` takes; empty: not declared (nothing to check against)
    expert_phases: tuple[str, ...] = ()

    name: str
    max_steps: int
    fps: int = 20
    cameras: tuple[str, ...]
    resolution: int

    @property
    @abstractmethod
    def task_ids(self) -> list[int]:
        """Ids of the suite's tasks, ``0..n_tasks-1``."""

    @abstractmethod
    def instruction(self, task_id: int) -> str:
        """The language instruction of one task."""

    n_eval_seeds: int = 50

    def eval_seeds(self, task_id: int) -> list[int]:
        """The fixed evaluation seeds (init states) of one task, like LIBERO's init states.

        Evaluation and training seeds come from disjoint ranges, so demonstrations never
        share an initial layout with the episodes a policy is judged on.
        """
        return [_SEED_STRIDE * (task_id + 1) + i for i in range(self.n_eval_seeds)]

    def train_seeds(self, task_id: int, n: int, offset: int = 0) -> list[int]:
        """``n`` seeds for demonstrations of one task, disjoint from :meth:`eval_seeds`."""
        start = _SEED_STRIDE * (task_id + 1) + _SEED_STRIDE // 2 + offset
        return list(range(start, start + n))

    @abstractmethod
    def make_env(self, task_id: int) -> SimEnv:
        """Build the env of one task with the suite's cameras, resolution and perturbations."""

    def make_expert(self, env: SimEnv) -> Expert:
        """A scripted expert for ``env``; suites without one raise a clear error."""
        raise ConfigError(f"task suite '{self.name}' has no scripted expert")
