"""``TabletopSuite``: the offline LIBERO-like benchmark as a :class:`TaskSuite`.

Built by Hydra from ``conf/task_suite/tabletop_*.yaml`` (``TabletopSuiteConfig`` plus the
``cameras`` of the chosen camera group)::

    TabletopSuite(name="tabletop_spatial", max_steps=220, fps=20, resolution=128,
                  n_eval_seeds=50, perturbation=PerturbationConfig(), task_type="spatial",
                  cameras=["agentview", "wrist"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError, unknown_choice
from vlaexp.sim.base import CAMERA_NAMES, Expert, SimEnv, TaskSuite
from vlaexp.sim.tabletop.env import TabletopEnv, check_resolution, control_substeps
from vlaexp.sim.tabletop.expert import TabletopExpert
from vlaexp.sim.tabletop.skills import PHASES
from vlaexp.sim.tabletop.tasks import SUITE_NAMES, SUITES, TaskSpec


def _perturbation(value: PerturbationConfig | Mapping[str, Any] | None) -> PerturbationConfig:
    if value is None:
        return PerturbationConfig()
    if isinstance(value, PerturbationConfig):
        return value
    if isinstance(value, Mapping):
        valid = [f.name for f in dataclasses.fields(PerturbationConfig)]
        for key in value:
            if key not in valid:
                raise unknown_choice("perturbation field", str(key), valid)
        return PerturbationConfig(**{str(k): v for k, v in value.items()})
    raise ConfigError(
        f"perturbation must be a PerturbationConfig or a mapping, got {type(value).__name__}"
    )


class TabletopSuite(TaskSuite):
    """Ten tasks of one type (``spatial | object | goal | long``) in the MuJoCo tabletop."""

    expert_phases = PHASES

    def __init__(
        self,
        name: str,
        max_steps: int,
        task_type: str,
        fps: int = 20,
        resolution: int = 128,
        n_eval_seeds: int = 50,
        perturbation: PerturbationConfig | Mapping[str, Any] | None = None,
        cameras: Sequence[str] = CAMERA_NAMES,
    ) -> None:
        if task_type not in SUITES:
            raise unknown_choice("task_type", str(task_type), SUITE_NAMES)
        cams = tuple(str(c) for c in cameras)
        if not cams:
            raise ConfigError(f"cameras is empty; choose from {', '.join(CAMERA_NAMES)}")
        for cam in cams:
            if cam not in CAMERA_NAMES:
                raise unknown_choice("camera", cam, CAMERA_NAMES)
        if int(max_steps) < 1:
            raise ConfigError(f"max_steps={max_steps} must be a positive number of steps")
        if int(n_eval_seeds) < 1:
            raise ConfigError(f"n_eval_seeds={n_eval_seeds} must be positive")
        control_substeps(int(fps))
        check_resolution(int(resolution))
        self.name = str(name)
        self.task_type = str(task_type)
        self.max_steps = int(max_steps)
        self.fps = int(fps)
        self.resolution = int(resolution)
        self.n_eval_seeds = int(n_eval_seeds)
        self.perturbation = _perturbation(perturbation)
        self.cameras = cams
        self.tasks: tuple[TaskSpec, ...] = SUITES[self.task_type]

    @property
    def task_ids(self) -> list[int]:
        return list(range(len(self.tasks)))

    def task(self, task_id: int) -> TaskSpec:
        """The definition of one task (scene, layout, goals, expert plan)."""
        if not isinstance(task_id, int) or not 0 <= task_id < len(self.tasks):
            last = len(self.tasks) - 1
            raise ConfigError(
                f"task id {task_id!r} is out of range: {self.name} has tasks 0..{last}"
            )
        return self.tasks[task_id]

    def instruction(self, task_id: int) -> str:
        return self.task(task_id).instruction

    def make_env(self, task_id: int, *, render: bool = True) -> TabletopEnv:
        """The env of one task; ``render=False`` skips the cameras (expert evaluation)."""
        return TabletopEnv(
            self.task(task_id),
            task_id=task_id,
            max_steps=self.max_steps,
            fps=self.fps,
            resolution=self.resolution,
            cameras=self.cameras,
            perturbation=self.perturbation,
            render=render,
        )

    def make_expert(self, env: SimEnv) -> Expert:
        if not isinstance(env, TabletopEnv):
            raise ConfigError(f"the tabletop expert needs a TabletopEnv, got {type(env).__name__}")
        return TabletopExpert(env, self.perturbation)
