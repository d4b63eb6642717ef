"""The policy contract: LeRobot's interface on a LightningModule.

Every policy implements :meth:`forward` (training loss) and :meth:`predict_action_chunk`
(inference); this base class provides LeRobot's ``reset`` / ``select_action`` action
queue, closed-loop acting on simulator observations, the Lightning training/validation
steps, optimizers from config, and ``save_pretrained``.

Batches use LeRobot's feature names::

    observation.images.<camera>  float[B, 3, S, S] in [-1, 1] (prepared by data.transforms)
    observation.state            float[B, state_dim], raw units (normalized here)
    action                       float[B, chunk_size, action_dim], raw units
    action_is_pad                bool[B, chunk_size], True past the episode's end
    task                         list[str] of B instructions
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlaexp.config.policy import PolicyConfig
from vlaexp.data.normalize import Normalizer
from vlaexp.data.transforms import hwc_uint8_to_chw_float, prepare_images
from vlaexp.training.pretrained import SavesPretrained

STATE = "observation.state"
ACTION = "action"
OBJECT_POSITION = "object_position"  # optional simulator observation (tabletop suites)


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


class VLAPolicy(SavesPretrained, pl.LightningModule, ABC):
    """Args:
    config: the policy's typed config.
    dataset_stats: normalization statistics (LeRobotDataset ``meta/stats.json`` layout).
    assets_dir: the ``pretrained_model`` directory the policy is being loaded from, where
        files of :meth:`pretrained_assets` (e.g. a tokenizer) were saved.
    """

    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    # Cameras missing from an observation become masked inputs (Pi0) instead of an error.
    allows_missing_cameras: ClassVar[bool] = False
    # The modules FSDP shards as units (trainer=fsdp); none: the whole policy is one unit.
    # Only modules whose own forward() runs can be units (FSDP gathers in forward hooks).
    fsdp_blocks: ClassVar[tuple[type[torch.nn.Module], ...]] = ()

    def __init__(
        self,
        config: PolicyConfig,
        dataset_stats: dict[str, dict[str, np.ndarray]] | None = None,
        assets_dir: Path | None = None,
    ):
        super().__init__()
        if config.n_action_steps > config.chunk_size:
            raise ValueError(
                f"policy.n_action_steps ({config.n_action_steps}) > policy.chunk_size ({config.chunk_size})"
            )
        self.config = config
        self.normalizer = Normalizer(
            modes={STATE: config.normalization.state, ACTION: config.normalization.action},
            dims={STATE: config.state_dim, ACTION: config.action_dim},
            stats=dataset_stats,
        )
        self.train_config_yaml: str | None = None  # embedded in checkpoints by the train stage
        self._action_queue: deque[torch.Tensor] = deque(maxlen=config.n_action_steps)

    # ----- LeRobot's inference contract -------------------------------------------------
    def reset(self) -> None:
        """Forget queued actions; call at the start of every episode."""
        self._action_queue.clear()

    @abstractmethod
    def predict_action_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        """float[B, chunk_size, action_dim] in raw action units."""

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        """float[B, action_dim]: the next action, from a chunk predicted every n_action_steps."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
        return self._action_queue.popleft()

    def observations_to_batch(
        self, observations: list[dict[str, Any]], instructions: list[str]
    ) -> dict[str, Any]:
        """Simulator observations (see ``vlaexp.sim.base``) -> a policy batch on this device.

        Images go through the same preparation as the DataModule's (``data.transforms``).
        """
        batch: dict[str, Any] = {"task": list(instructions)}
        for cam in self.config.cameras:
            missing = [i for i, o in enumerate(observations) if cam not in o["images"]]
            if missing and self.allows_missing_cameras and len(missing) == len(observations):
                continue
            if missing:
                have = sorted(observations[missing[0]]["images"])
                raise KeyError(f"policy needs camera '{cam}', the env renders {have}")
            images = torch.stack([hwc_uint8_to_chw_float(o["images"][cam]) for o in observations])
            batch[image_key(cam)] = prepare_images(images, self.config.image_size).to(self.device)
        states = np.stack([np.asarray(o["state"], dtype=np.float32) for o in observations])
        batch[STATE] = torch.from_numpy(states).to(self.device)
        if all(OBJECT_POSITION in o for o in observations):  # for monitors, not the network
            objects = np.stack([np.asarray(o[OBJECT_POSITION], np.float32) for o in observations])
            batch[f"observation.{OBJECT_POSITION}"] = torch.from_numpy(objects)
        return batch

    @torch.no_grad()
    def act_batch(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        """Closed-loop step for the SimRunner: float32[B, action_dim] for B envs in lockstep."""
        action = self.select_action(self.observations_to_batch(observations, instructions))
        return action.float().cpu().numpy()

    # ----- training -----------------------------------------------------------------------
    @abstractmethod
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, extra metrics) for a training batch."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, info = self(batch)
        bs = batch[ACTION].shape[0]
        # averaged over ranks: the loss of the global batch, as one device would log it
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        for k, v in info.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, info = self(batch)
        bs = batch[ACTION].shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        for k, v in info.items():
            self.log(f"val/{k}", v, sync_dist=True, batch_size=bs)

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer; policies override to freeze or split groups."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """``trainer.gradient_clip_val`` by norm under FSDP too: Lightning's FSDP precision
        refuses norm clipping, since only the FSDP module can compute the norm over every
        rank's shard (``FullyShardedDataParallel.clip_grad_norm_``)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = self.trainer.model
        if (
            gradient_clip_val
            and isinstance(model, FullyShardedDataParallel)
            and gradient_clip_algorithm in (None, "norm")
        ):
            model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(OmegaConf.structured(self.config.optimizer))(
            self.optimizer_param_groups()
        )
        scheduler = instantiate(OmegaConf.structured(self.config.scheduler))(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
