"""Behaviour cloning: a timm CNN per camera and the state, through an MLP, to an action chunk.

The simplest competitive baseline of robomimic/LeRobot style: it shows whether the data,
the cameras and the evaluation work before any large model is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from vlaexp.config.policy import BCConfig
from vlaexp.errors import ConfigError
from vlaexp.policies.base import ACTION, STATE, VLAPolicy, image_key


def _create_backbone(name: str, pretrained: bool) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ConfigError(f"policy.vision_backbone: {e}") from None
    except OSError as e:  # pretrained weights need the hub
        raise ConfigError(
            f"Could not load pretrained weights for timm model '{name}' ({e}). Offline, set "
            "policy.pretrained_backbone=false or put the weights in the HF cache."
        ) from e


class BCPolicy(VLAPolicy):
    config_class = BCConfig

    def __init__(
        self,
        config: BCConfig,
        dataset_stats: dict[str, dict[str, np.ndarray]] | None = None,
        assets_dir: Path | None = None,
    ):
        super().__init__(config, dataset_stats, assets_dir)
        if config.loss not in ("l1", "mse"):
            raise ConfigError(f"policy.loss must be 'l1' or 'mse', got '{config.loss}'")
        self.backbone = _create_backbone(config.vision_backbone, config.pretrained_backbone)
        in_dim = self.backbone.num_features * len(config.cameras) + config.state_dim
        layers: list[nn.Module] = []
        for _ in range(config.n_layers):
            layers += [nn.Linear(in_dim, config.hidden_dim), nn.GELU(), nn.Dropout(config.dropout)]
            in_dim = config.hidden_dim
        layers.append(nn.Linear(in_dim, config.chunk_size * config.action_dim))
        self.head = nn.Sequential(*layers)

    def _predict_normalized(self, batch: dict[str, Any]) -> torch.Tensor:
        """float[B, chunk_size, action_dim] in normalized action units."""
        cams = self.config.cameras
        images = torch.stack([batch[image_key(c)] for c in cams], dim=1)  # [B, n_cams, 3, S, S]
        b = images.shape[0]
        feats = self.backbone(images.flatten(0, 1)).reshape(b, -1)  # one pass for all cameras
        state = self.normalizer.normalize(STATE, batch[STATE])
        out = self.head(torch.cat([feats, state], dim=-1))
        return out.reshape(b, self.config.chunk_size, self.config.action_dim)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.normalizer.normalize(ACTION, batch[ACTION])
        pred = self._predict_normalized(batch)
        loss_fn = F.l1_loss if self.config.loss == "l1" else F.mse_loss
        per_elem = loss_fn(pred, target, reduction="none")
        valid = (~batch["action_is_pad"]).unsqueeze(-1).to(per_elem.dtype)
        loss = (per_elem * valid).sum() / (valid.sum() * per_elem.shape[-1]).clamp_min(1.0)
        return loss, {}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.normalizer.unnormalize(ACTION, self._predict_normalized(batch))
