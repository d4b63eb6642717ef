"""Structured configs of the `task_suite` and `camera` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from vlaexp.config.perturbation import PerturbationConfig


@dataclass
class TaskSuiteConfig:
    """Fields every suite has; `_target_` names the TaskSuite class built with these kwargs."""

    _target_: str = MISSING
    name: str = MISSING
    max_steps: int = MISSING  # horizon per episode (control steps at `fps`)
    fps: int = 20
    resolution: int = 128  # rendered square image side; the policy resizes as it needs
    n_eval_seeds: int = 50  # fixed evaluation init states per task
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)


@dataclass
class TabletopSuiteConfig(TaskSuiteConfig):
    _target_: str = "vlaexp.sim.tabletop.suite.TabletopSuite"
    task_type: str = MISSING  # spatial | object | goal | long


@dataclass
class LiberoSuiteConfig(TaskSuiteConfig):
    """A LIBERO benchmark suite through hf-libero (assets from the hub or `assets_dir`)."""

    _target_: str = "vlaexp.sim.libero.LiberoSuite"
    suite: str = MISSING  # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    # LIBERO's meshes and textures (articulated_objects/, scenes/, textures/, ...); None =
    # hf-libero's location, downloaded from the hub on first use. Task files ship in the wheel.
    assets_dir: Any = None
    num_steps_wait: int = 10  # no-op steps after reset while objects settle
    resolution: int = 256
    # Where hf-libero's config.yaml is written (it prompts on import without one);
    # None = ~/.cache/vlaexp/libero. LIBERO_CONFIG_PATH is set to it for the run.
    config_dir: Any = None


@dataclass
class RobosuiteSuiteConfig(TaskSuiteConfig):
    """robosuite tasks with a Panda arm and the OSC_POSE controller."""

    _target_: str = "vlaexp.sim.robosuite.RobosuiteSuite"
    env_name: str = MISSING  # Lift | Stack | PickPlaceCan


@dataclass
class CameraConfig:
    name: str = MISSING
    names: list[str] = MISSING  # camera names passed to the task suite and the policy
