"""Structured configs of the `task_suite` and `camera` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class PerturbationConfig:
    """Out-of-distribution changes and expert faults, all off by default.

    Scene perturbations change what the cameras see; expert faults make the scripted expert
    fail on purpose (for failure data used by RND and value functions).
    """

    object_colors: bool = False  # random RGB per object
    table_texture: bool = False  # random table colour / checker texture
    lighting: float = 0.0  # relative jitter of light intensity and direction, 0 = off
    camera_jitter: float = 0.0  # agentview pose noise: metres (position) and radians (angles)
    distractors: int = 0  # extra objects placed where they do not block the task
    action_noise: float = 0.0  # std of Gaussian noise added to expert actions
    early_release: bool = False  # expert opens the gripper while carrying
    wrong_target: bool = False  # expert manipulates another object / place than asked
    freeze: bool = False  # expert stops moving part-way through
    # Chance that an episode gets one of the enabled faults (one per episode, drawn from its
    # seed); below 1 a collected dataset mixes clean successes with tagged failures.
    fault_prob: float = 1.0


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
