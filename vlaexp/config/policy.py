"""Structured configs of the `policy` and `tokenizer` groups.

A policy config is saved as ``config.json`` beside the weights, so a checkpoint rebuilds
its policy with nothing but the files in ``pretrained_model/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class OptimizerConfig:
    """A ``_partial_`` factory: the policy calls it with its parameter groups."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 1e-2


@dataclass
class SchedulerConfig:
    """A ``_partial_`` factory called with the optimizer; returns a LambdaLR."""

    _target_: str = "vlaexp.training.schedules.warmup_cosine"
    _partial_: bool = True
    warmup_steps: int = 100
    decay_steps: int = 10_000
    final_lr_ratio: float = 0.1


@dataclass
class NormalizationConfig:
    """Per feature type: ``mean_std``, ``quantile`` (q01/q99 to [-1, 1]) or ``identity``."""

    state: str = "mean_std"
    action: str = "mean_std"


@dataclass
class PolicyConfig:
    """Fields every policy has. `type` picks the class in :mod:`vlaexp.policies.factory`."""

    type: str = MISSING
    name: str = MISSING
    cameras: list[str] = field(
        default_factory=lambda: ["agentview", "wrist"]
    )  # yaml: ${camera.names}
    image_size: int = 128  # square side the images are resized (with padding) to
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 10  # actions predicted per forward pass
    n_action_steps: int = 10  # actions executed from each chunk before predicting again
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # A saved policy (`pretrained_model/` dir, run dir or hub id): training starts from its
    # weights; the `eval` stage evaluates it when this run trains nothing (LeRobot's policy.path).
    path: Any = None


@dataclass
class BCConfig(PolicyConfig):
    """Behaviour cloning: a timm CNN per camera + state -> MLP -> an action chunk."""

    type: str = "bc"
    vision_backbone: str = "resnet10t"  # any timm model name
    pretrained_backbone: bool = False  # ImageNet weights through timm (needs the hub)
    hidden_dim: int = 256
    n_layers: int = 2
    dropout: float = 0.0
    loss: str = "l1"  # l1 | mse


@dataclass
class TokenizerConfig:
    """Action tokenizer; ``none`` leaves actions continuous."""

    type: str = "none"
    name: str = "none"
