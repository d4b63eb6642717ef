"""Structured configs of the `data` group and the evaluation settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CollectConfig:
    """How the `collect` stage records scripted demonstrations of the task suite."""

    episodes_per_task: int = 20
    task_ids: Any = None  # list of task ids to record; None = every task of the suite
    seed_offset: int = 0  # shifts the training seeds (never overlaps the eval seeds)
    use_videos: bool = True  # mp4 per camera (compact) instead of PNG frames
    keep_failures: bool = True  # failed episodes are kept and flagged `success=False`
    # DART noise: std (action units, 1 = 5 cm / 0.5 rad a step) of Gaussian noise added to the
    # translation (x, y, z) the env executes; the dataset records the expert's own action,
    # so the demos include its corrections of the drift. 0 = the expert's plain actions. (Not
    # task_suite.perturbation.action_noise: that one jitters the recorded actions themselves.)
    action_noise: float = 0.0
    # The expert's phases the noise applies in (None: all). Noise in a phase that ends when a
    # tolerance is met and the gripper then acts (tabletop: descend -> close, lower -> open)
    # makes the moment of closing/opening chance, which no observation predicts: e.g.
    # [approach, lift, carry, retreat] keeps those phases noise-free.
    action_noise_phases: Any = None
    # Failed episodes (expert faults) are recorded until the expert has stood still this many
    # steps (frozen, or its plan run out after the fault), as an operator ends a stalled
    # attempt; null: to the horizon. Successes are never cut.
    end_failures_after_idle: Any = None
    # Env processes the expert's episodes roll out in (spawned); the dataset does not depend
    # on it (episodes are written in seed order), so it is left out of the cache key.
    n_workers: int = 1
    # Processes that write the dataset, each a contiguous share of the episodes with its share
    # of n_workers, merged in order (LeRobot's aggregate_datasets): one process writes at most
    # ~1.6 demos a second, whatever n_workers is. The same dataset: left out of the cache key.
    writers: int = 1


@dataclass
class DataConfig:
    """A LeRobotDataset (v3): recorded by `collect`, on local disk, or on the hub.

    With ``source: collect`` the dataset is the content-addressed output of the collect
    stage. With ``source: lerobot`` it is read from ``root`` when set, else from the hub
    repo ``repo_id`` (cached under ``$HF_LEROBOT_HOME``).
    """

    name: str = "tabletop"
    source: str = "collect"  # collect | lerobot
    repo_id: Any = None  # e.g. "lerobot/libero_spatial_image"
    root: Any = None  # local dataset root; overrides the hub cache
    camera_keys: dict[str, str] = field(
        default_factory=lambda: {
            "agentview": "observation.images.agentview",
            "wrist": "observation.images.wrist",
        }
    )
    state_key: str = "observation.state"
    action_key: str = "action"
    train_success_only: bool = True  # behaviour cloning learns from successful episodes
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/val/test
    split_seed: int = 0
    batch_size: int = 32
    num_workers: int = 2
    pin_memory: bool = True
    video_backend: Any = None  # None lets LeRobot choose (torchcodec, else pyav)
    preload: bool = False  # decode the whole dataset into memory once (small datasets, fast GPUs)
    collect: CollectConfig = field(default_factory=CollectConfig)


@dataclass
class EvalConfig:
    """Closed-loop evaluation in the task suite (the `eval` stage and the sim-eval callback)."""

    task_ids: Any = None  # list of task ids; None = every task of the suite
    n_episodes: int = 10  # per task, taken in order from the suite's fixed eval seeds
    n_videos: int = 2  # mp4s written for the first k episodes
    max_steps: Any = None  # overrides the suite's horizon when set
    n_envs: int = 1  # env processes stepping in parallel (spawned; 1 = in the main process)
    record_dataset: bool = False  # also write the rollouts as a LeRobotDataset (eval/rollouts)
