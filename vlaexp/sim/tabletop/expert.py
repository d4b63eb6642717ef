"""The scripted expert of every tabletop task, with optional faults for failure data.

The expert runs its task's plan (a sequence of skills, see ``skills.py``) from privileged
simulator state. Faults make it fail on purpose and say so in ``expert.fault`` and
``expert.fault_step`` (the step the fault took effect), so collected episodes can be tagged:

- ``early_release``: during a held motion (carry, drawer pull, knob turn) the expert stops,
  opens the fingers while it is still far from the goal, backs off and moves on to the next
  skill; only tasks with a held motion can get it.
- ``wrong_target``: the plan for another object or goal (``TaskSpec.wrong_plan``).
- ``freeze``: from the start of a randomly chosen phase before the goal is reached, the
  expert stops moving for the rest of the episode.
- ``action_noise`` (a std, not a discrete fault): Gaussian noise on every action.

Which enabled fault an episode gets, and when, is drawn from the episode seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.sim.base import ACTION_DIM, Expert
from vlaexp.sim.tabletop.env import TabletopEnv
from vlaexp.sim.tabletop.skills import OPEN, Command, Skill, hold, retreat

FAULTS = ("early_release", "wrong_target", "freeze")
HELD_PHASES = ("carry", "pull", "turn")
EARLY_RELEASE_AT = (0.1, 0.25)  # fraction of the held motion done when the fingers open


class TabletopExpert(Expert):
    """Waypoint expert for one :class:`TabletopEnv`; call :meth:`reset` after ``env.reset``."""

    def __init__(self, env: TabletopEnv, perturbation: PerturbationConfig | None = None) -> None:
        self.env = env
        self.cfg = perturbation if perturbation is not None else env.perturbation
        self.check_action_noise(self.cfg)
        if not 0.0 <= self.cfg.fault_prob <= 1.0:
            raise ValueError(f"fault_prob={self.cfg.fault_prob} must be in [0, 1]")
        self.fault = "none"
        self.fault_step: int | None = None
        self._plan: tuple[Skill, ...] = ()
        self._skill_idx = 0
        self._current: Iterator[Command] | None = None
        self._steps = 0
        self._grip = OPEN
        self.phase = ""
        self._frozen = False
        self._noise_rng: np.random.Generator | None = None
        self._noisy = False  # this episode's actions get action_noise (drawn at reset)
        # Where the drawn fault strikes: skill index, carry fraction, phase name.
        self._fault_skill = -1
        self._release_at = 1.0
        self._freeze_phase = ""

    @property
    def enabled_faults(self) -> tuple[str, ...]:
        cfg = self.cfg
        return tuple(f for f in FAULTS if getattr(cfg, f))

    def reset(self) -> None:
        env = self.env
        if env.seed is None:
            raise RuntimeError("reset the env before the expert")
        rng = np.random.default_rng([env.seed, 3])
        self._noise_rng = np.random.default_rng([env.seed, 4])
        self._noisy = self.draws_action_noise(self.cfg, env.seed)
        task = env.task
        candidates = [
            f
            for f in self.enabled_faults
            if f != "early_release" or any(s.holds_object for s in task.plan)
        ]
        self.fault = "none"
        if candidates and rng.random() < self.cfg.fault_prob:
            self.fault = candidates[int(rng.integers(len(candidates)))]
        self.fault_step = 0 if self.fault == "wrong_target" else None
        self._plan = task.wrong_plan if self.fault == "wrong_target" else task.plan
        if self.fault == "early_release":
            held = [i for i, s in enumerate(self._plan) if s.holds_object]
            self._fault_skill = held[int(rng.integers(len(held)))]
            self._release_at = float(rng.uniform(*EARLY_RELEASE_AT))
        elif self.fault == "freeze":
            self._fault_skill = int(rng.integers(len(self._plan)))
            phases = self._plan[self._fault_skill].freeze_phases
            self._freeze_phase = phases[int(rng.integers(len(phases)))]
        self._skill_idx = 0
        self._current = None
        self._steps = 0
        self._grip = OPEN
        self.phase = ""
        self._frozen = False

    def info(self) -> dict[str, Any]:
        """What was injected this episode: ``fault``, ``fault_step``, ``action_noise``."""
        return {
            "fault": self.fault,
            "fault_step": self.fault_step,
            "action_noise": float(self.cfg.action_noise) if self._noisy else 0.0,
        }

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """Next float32[7] action; ``obs`` is unused (the expert reads privileged state)."""
        if self._noise_rng is None:
            raise RuntimeError("call expert.reset() after env.reset() before act()")
        if self.env.step_count == 0 and self._steps > 0:
            raise RuntimeError("the env was reset but the expert was not: call expert.reset()")
        self._steps += 1
        cmd = None if self._frozen else self._next_command()
        if cmd is not None and self._should_freeze(cmd):
            self._frozen, self.fault_step, cmd = True, self._steps, None
        if cmd is not None and self._should_release(cmd):
            self.fault_step = self._steps
            self._current = chain(hold(self.env, OPEN, 4, "early_release"), retreat(self.env, OPEN))
            cmd = self._next_command()
        self.phase = "" if cmd is None else cmd.phase
        if cmd is None:
            action = np.zeros(ACTION_DIM, dtype=np.float32)
            action[6] = self._grip
            return action
        action = cmd.action.copy()
        self._grip = float(action[6])
        if self._noisy:
            noise = self._noise_rng.normal(0.0, self.cfg.action_noise, ACTION_DIM)
            action = np.clip(action + noise, -1.0, 1.0).astype(np.float32)
        return action

    def _next_command(self) -> Command | None:
        while self._skill_idx < len(self._plan):
            if self._current is None:
                self._current = self._plan[self._skill_idx].run(self.env)
            cmd = next(self._current, None)
            if cmd is not None:
                return cmd
            self._skill_idx += 1
            self._current = None
        return None

    def _should_freeze(self, cmd: Command) -> bool:
        if self.fault != "freeze":
            return False
        return self._skill_idx > self._fault_skill or (
            self._skill_idx == self._fault_skill and cmd.phase == self._freeze_phase
        )

    def _should_release(self, cmd: Command) -> bool:
        return (
            self.fault == "early_release"
            and self.fault_step is None
            and self._skill_idx == self._fault_skill
            and cmd.phase in HELD_PHASES
            and cmd.progress >= self._release_at
        )
