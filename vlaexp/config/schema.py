"""The typed root config: every composed config is checked against it.

Key typos and wrong types fail at compose time with the full key named, because every
group's option is merged into one of these dataclasses (see :mod:`vlaexp.config.store`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from vlaexp.config.data import DataConfig, EvalConfig
from vlaexp.config.sim import CameraConfig
from vlaexp.config.tokenizer import RVQCompareConfig
from vlaexp.config.training import PathsConfig, TrainerConfig
from vlaexp.config.uncertainty import RNDConfig


@dataclass
class VlaexpConfig:
    name: str = "adhoc"  # the experiment's name; first part of the run dir
    description: str = ""
    stages: list[str] = field(default_factory=lambda: ["train"])  # run in this order
    seed: int = 0
    resume: bool = False  # continue from `checkpoints/last` of an existing run dir
    print_config: bool = True
    debug_mode: Any = None  # set by the `debug` group's presets
    tags: list[str] = field(default_factory=list)  # extra wandb tags
    policy: Any = MISSING
    task_suite: Any = MISSING
    camera: CameraConfig = MISSING
    tokenizer: Any = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    rnd: RNDConfig = field(default_factory=RNDConfig)  # uncertainty stages (rnd_*)
    rvq_compare: RVQCompareConfig = field(default_factory=RVQCompareConfig)
