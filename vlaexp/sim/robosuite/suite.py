"""``RobosuiteSuite``: one robosuite task (Lift, Stack or PickPlaceCan) as a :class:`TaskSuite`.

Built by Hydra from ``conf/task_suite/robosuite_*.yaml`` (``RobosuiteSuiteConfig`` plus the
``cameras`` of the chosen camera group)::

    RobosuiteSuite(name="robosuite_lift", max_steps=200, fps=20, resolution=128,
                   n_eval_seeds=50, perturbation=PerturbationConfig(), env_name="Lift",
                   cameras=["agentview", "wrist"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError, unknown_choice
from vlaexp.sim.base import CAMERA_NAMES, Expert, SimEnv, TaskSuite
from vlaexp.sim.robosuite.env import RobosuiteEnv, check_cameras, check_fps
from vlaexp.sim.robosuite.expert import RobosuiteExpert
from vlaexp.sim.robosuite.perturb import check_perturbation
from vlaexp.sim.robosuite.tasks import ENV_NAMES, TASKS, RobosuiteTask


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


class RobosuiteSuite(TaskSuite):
    """A robosuite env with a Panda arm and OSC_POSE; its one task has id 0."""

    def __init__(
        self,
        name: str,
        max_steps: int,
        env_name: str,
        fps: int = 20,
        resolution: int = 128,
        n_eval_seeds: int = 50,
        perturbation: PerturbationConfig | Mapping[str, Any] | None = None,
        cameras: Sequence[str] = CAMERA_NAMES,
    ) -> None:
        if env_name not in TASKS:
            raise unknown_choice("robosuite env_name", str(env_name), ENV_NAMES)
        if int(max_steps) < 1:
            raise ConfigError(f"max_steps={max_steps} must be a positive number of steps")
        if int(n_eval_seeds) < 1:
            raise ConfigError(f"n_eval_seeds={n_eval_seeds} must be positive")
        if int(resolution) < 8:
            raise ConfigError(f"resolution={resolution} is too small; use at least 8 pixels")
        check_fps(int(fps))
        self.task: RobosuiteTask = TASKS[env_name]
        self.perturbation = _perturbation(perturbation)
        check_perturbation(self.perturbation, self.task)
        self.name = str(name)
        self.env_name = str(env_name)
        self.max_steps = int(max_steps)
        self.fps = int(fps)
        self.resolution = int(resolution)
        self.n_eval_seeds = int(n_eval_seeds)
        self.cameras = check_cameras(cameras)

    @property
    def task_ids(self) -> list[int]:
        return [0]

    def _check_task(self, task_id: int) -> None:
        if task_id != 0 or isinstance(task_id, bool):
            raise ConfigError(
                f"task id {task_id!r} is not in suite '{self.name}': a robosuite suite has one "
                "task. Valid task ids: 0"
            )

    def instruction(self, task_id: int) -> str:
        self._check_task(task_id)
        return self.task.instruction

    def make_env(self, task_id: int, *, render: bool = True) -> RobosuiteEnv:
        """The env of the task; ``render=False`` skips the cameras (expert evaluation)."""
        self._check_task(task_id)
        return RobosuiteEnv(
            self.task,
            task_id=task_id,
            max_steps=self.max_steps,
            fps=self.fps,
            resolution=self.resolution,
            cameras=self.cameras,
            perturbation=self.perturbation,
            render=render,
        )

    def make_expert(self, env: SimEnv) -> Expert:
        if not isinstance(env, RobosuiteEnv):
            raise ConfigError(
                f"the robosuite expert needs a RobosuiteEnv, got {type(env).__name__}"
            )
        return RobosuiteExpert(env, self.perturbation)
