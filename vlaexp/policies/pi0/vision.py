"""PaliGemma's image encoder: transformers' SigLIP vision transformer (no pooling head)."""

from __future__ import annotations

from transformers import SiglipVisionConfig, SiglipVisionModel

from vlaexp.config.policy import VisionTowerConfig
from vlaexp.errors import ConfigError


def build_vision_tower(
    cfg: VisionTowerConfig, image_size: int, attention: str
) -> SiglipVisionModel:
    """SigLIP at ``image_size`` (So400m/14 at 224 gives 16 x 16 = 256 tokens per image).

    Parameter names (``vision_model.embeddings.patch_embedding`` ...) are those of the
    published checkpoints' ``vision_tower``.
    """
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
    return SiglipVisionModel(config)


def tokens_per_image(cfg: VisionTowerConfig, image_size: int) -> int:
    return (image_size // cfg.patch_size) ** 2
