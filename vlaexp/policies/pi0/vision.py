"""PaliGemma's image encoder: transformers' SigLIP vision transformer (no pooling head)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from vlaexp.config.policy import VisionTowerConfig
from vlaexp.errors import ConfigError


class VisionTower(nn.Module):
    """Holds SigLIP's vision transformer as ``vision_model``, the published checkpoints' name.

    transformers < 5 nests the transformer in ``SiglipVisionModel.vision_model``; from 5 on
    ``SiglipVisionModel`` is the transformer itself. Whichever module holds the layers is
    kept here, so parameter names are the same under both.
    """

    def __init__(self, model: SiglipVisionModel) -> None:
        super().__init__()
        self.vision_model = getattr(model, "vision_model", model)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[N, 3, S, S] in [-1, 1] -> float[N, (S / patch)^2, width]."""
        return self.vision_model(pixel_values=pixels).last_hidden_state


def build_vision_tower(cfg: VisionTowerConfig, image_size: int, attention: str) -> VisionTower:
    """SigLIP at ``image_size`` (So400m/14 at 224 gives 16 x 16 = 256 tokens per image),
    initialized as SigLIP initializes itself."""
    if image_size % cfg.patch_size:
        raise ConfigError(
            f"policy.image_size={image_size} is not a multiple of policy.vision.patch_size="
            f"{cfg.patch_size}"
        )
    config = SiglipVisionConfig(
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        patch_size=cfg.patch_size,
        image_size=image_size,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    config._attn_implementation = "eager" if attention == "eager" else "sdpa"
    return VisionTower(SiglipVisionModel(config))
