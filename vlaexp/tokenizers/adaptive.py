"""Monitors of adaptive coarse-to-fine RVQ decoding: when a 2-layer draft is not enough.

An RVQ policy drafts each chunk from the first two code layers (the coarse motion) and
refines to every layer only where a monitor says the moment needs precision. Each monitor
answers per sample of a batch (``bool[B]``, True = refine):

- ``entropy``: the draft layers' code distributions are uncertain, mean entropy (nats) over
  the draft layers and latent steps above the threshold (a uniform choice of 256 codes is
  ln 256 = 5.5);
- ``action_variance``: the last ``window`` executed actions vary more than the threshold
  (mean per-dimension variance): the robot is adjusting, as in contact; with fewer than two
  actions seen it refines (no evidence that coarse is enough);
- ``gripper_distance``: the gripper is within the threshold (metres) of the object, from
  positions in the observation (first 3 values of two keys).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import torch

from vlaexp.config.tokenizer import MonitorConfig
from vlaexp.errors import ConfigError, unknown_choice


class RefinementMonitor(ABC):
    """``should_refine(...) -> bool[B]``; ``observe(actions)`` after each executed step;
    ``reset()`` at the start of an episode."""

    def __init__(self, threshold: float) -> None:
        if threshold < 0:
            raise ConfigError(f"tokenizer.monitor.threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)

    def reset(self) -> None:  # noqa: B027 (stateless monitors have nothing to reset)
        """Forget the episode so far."""

    def observe(self, actions: torch.Tensor) -> None:  # noqa: B027 (most monitors ignore it)
        """The actions float[B, A] just executed."""

    @abstractmethod
    def should_refine(
        self,
        logits: torch.Tensor | None = None,
        observation: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """bool[B]: refine these samples' chunks to every layer.

        ``logits``: the draft layers' code logits float[B, draft layers, latent steps, K];
        ``observation``: the batch the policy acts on."""


class EntropyMonitor(RefinementMonitor):
    def should_refine(self, logits=None, observation=None) -> torch.Tensor:
        if logits is None or logits.ndim != 4:
            raise ValueError("the entropy monitor needs draft logits [B, layers, steps, codes]")
        logp = logits.float().log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)  # [B, layers, steps]
        return entropy.mean(dim=(1, 2)) > self.threshold


class ActionVarianceMonitor(RefinementMonitor):
    def __init__(self, threshold: float, window: int) -> None:
        super().__init__(threshold)
        if window < 2:
            raise ConfigError(f"tokenizer.monitor.window must be >= 2, got {window}")
        self.recent: deque[torch.Tensor] = deque(maxlen=window)

    def reset(self) -> None:
        self.recent.clear()

    def observe(self, actions: torch.Tensor) -> None:
        self.recent.append(actions.detach().float())

    def should_refine(self, logits=None, observation=None) -> torch.Tensor:
        if len(self.recent) < 2:
            batch = (
                logits.shape[0]
                if logits is not None
                else (self.recent[0].shape[0] if self.recent else 1)
            )
            return torch.ones(batch, dtype=torch.bool)
        history = torch.stack(list(self.recent))  # [window, B, A]
        return history.var(dim=0).mean(-1) > self.threshold


class GripperDistanceMonitor(RefinementMonitor):
    def __init__(self, threshold: float, gripper_key: str, object_key: str) -> None:
        super().__init__(threshold)
        self.gripper_key, self.object_key = gripper_key, object_key

    def should_refine(self, logits=None, observation=None) -> torch.Tensor:
        observation = observation or {}
        for setting, key in (("gripper_key", self.gripper_key), ("object_key", self.object_key)):
            if key not in observation:
                raise ConfigError(
                    f"tokenizer.monitor.{setting}='{key}' is not in the observation "
                    f"(keys: {sorted(observation)}): the gripper_distance monitor needs both "
                    "positions"
                )
        gripper = torch.as_tensor(observation[self.gripper_key]).float()[..., :3]
        # the state is a policy input and reaches the policy's device; the object's position
        # is not, and stays where the simulator put it (on the CPU)
        target = torch.as_tensor(observation[self.object_key], device=gripper.device)
        target = target.float()[..., :3]
        return (gripper - target).norm(dim=-1).reshape(-1) < self.threshold


MONITORS = ("entropy", "action_variance", "gripper_distance")


def make_monitor(cfg: MonitorConfig | Any) -> RefinementMonitor:
    """The monitor ``tokenizer.monitor`` describes."""
    if cfg.kind == "entropy":
        return EntropyMonitor(cfg.threshold)
    if cfg.kind == "action_variance":
        return ActionVarianceMonitor(cfg.threshold, cfg.window)
    if cfg.kind == "gripper_distance":
        return GripperDistanceMonitor(cfg.threshold, cfg.gripper_key, cfg.object_key)
    raise unknown_choice("tokenizer.monitor.kind", cfg.kind, MONITORS)
