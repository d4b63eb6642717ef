"""Structured configs of the `trainer`, `logger`, `callbacks` and `paths` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerConfig:
    """Keyword arguments of the one shared ``lightning.Trainer``.

    Callbacks, loggers and the checkpoint plugin are added by
    :func:`vlaexp.training.trainer.build_trainer`, not here.
    """

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids, or "auto"
    num_nodes: int = 1
    strategy: Any = "auto"  # a name ("ddp") or a `_target_` node (FSDPStrategy)
    precision: Any = "32-true"
    max_steps: int = -1
    max_epochs: Any = None  # int or None
    max_time: Any = None  # "DD:HH:MM:SS": stop training then (later stages still run)
    min_steps: Any = None
    gradient_clip_val: Any = 1.0
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    val_check_interval: Any = None  # int steps or float fraction of an epoch
    check_val_every_n_epoch: Any = 1
    log_every_n_steps: int = 10
    num_sanity_val_steps: Any = None
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    overfit_batches: Any = 0.0
    deterministic: Any = None
    benchmark: Any = None
    detect_anomaly: bool = False
    sync_batchnorm: bool = False
    use_distributed_sampler: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = True


@dataclass
class WandbLoggerConfig:
    """``lightning.pytorch.loggers.WandbLogger``; offline unless `mode`/`WANDB_MODE` says so.

    `group` and `tags` left empty are filled at run time: the sweep directory groups the
    runs of one multirun, and tags name the policy, task suite, camera set and seed.
    """

    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: str = "vlaexp"
    entity: Any = None
    name: Any = None
    group: Any = None
    tags: list[str] = field(default_factory=list)
    job_type: str = "train"
    mode: str = "offline"
    save_dir: Any = "${paths.output_dir}"
    log_model: bool = False


@dataclass
class CSVLoggerConfig:
    _target_: str = "lightning.pytorch.loggers.CSVLogger"
    save_dir: Any = "${paths.output_dir}"
    name: str = "csv"
    version: Any = ""  # "" keeps metrics.csv directly under save_dir/name


@dataclass
class StepCheckpointConfig:
    """vlaexp's LeRobot-layout checkpoints: ``checkpoints/<step:06d>/`` and a ``last`` link."""

    _target_: str = "vlaexp.training.checkpoint.StepCheckpoint"
    dirpath: Any = "${paths.output_dir}/checkpoints"
    save_freq: int = 1000  # steps between checkpoints; one more is always written at the end
    keep_last: Any = None  # int: keep only the newest N step dirs; None keeps all


@dataclass
class SimEvalConfig:
    """Closed-loop evaluation every N steps; keeps ``checkpoints/best`` by success."""

    _target_: str = "vlaexp.callbacks.sim_eval.SimEvalCallback"
    _recursive_: bool = False  # the task_suite node is built in the eval workers, not here
    task_suite: Any = "${task_suite}"
    every_n_steps: int = 1000
    n_episodes: Any = "${eval.n_episodes}"
    n_envs: Any = "${eval.n_envs}"
    n_videos: int = 1
    task_ids: Any = "${eval.task_ids}"
    max_steps: Any = "${eval.max_steps}"
    output_dir: Any = "${paths.output_dir}/sim_eval"
    checkpoint_dir: Any = "${paths.output_dir}/checkpoints"
    keep_best: bool = True


@dataclass
class LearningRateMonitorConfig:
    _target_: str = "lightning.pytorch.callbacks.LearningRateMonitor"
    logging_interval: str = "step"


@dataclass
class RichProgressBarConfig:
    _target_: str = "lightning.pytorch.callbacks.RichProgressBar"
    refresh_rate: int = 1
    leave: bool = False


@dataclass
class ModelSummaryConfig:
    _target_: str = "lightning.pytorch.callbacks.RichModelSummary"
    max_depth: int = 2


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (Lightning's EMAWeightAveraging). Checkpoints'
    ``pretrained_model/`` holds the averaged weights (what evaluation uses); the live weights
    are kept in ``training_state/`` for resuming."""

    _target_: str = "lightning.pytorch.callbacks.EMAWeightAveraging"
    decay: float = 0.999
    update_every_n_steps: int = 1
    update_starting_at_step: Any = None


@dataclass
class PathsConfig:
    """Where things go. Relative paths are resolved against the launch directory."""

    root_dir: str = "${oc.env:VLAEXP_ROOT,${hydra:runtime.cwd}}"
    outputs_dir: str = "${paths.root_dir}/outputs"
    cache_dir: str = "${paths.outputs_dir}/cache"  # content-addressed artifacts (datasets, ...)
    output_dir: Any = "${hydra:runtime.output_dir}"  # this run's dir (None under --cfg)
    work_dir: str = "${hydra:runtime.cwd}"
