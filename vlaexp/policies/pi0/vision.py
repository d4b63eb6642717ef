"""PaliGemma's image encoder: transformers' SigLIP vision transformer (no pooling head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def pad_mlp_width(tower: VisionTower, multiple: int) -> int:
    """Pad every SigLIP MLP's hidden width (fc1's outputs, fc2's inputs) with zeros up to a
    multiple of ``multiple``; returns the padded width.

    Exact, in training too: a padded unit's pre-activation is 0 (zero weights and bias),
    GELU(0) = 0, and fc2 reads it through zero weights. Its gradients are zero as well (fc2's
    padded columns see a zero input; fc1's padded rows get the gradient through fc2's zero
    columns), so AdamW, weight decay included, leaves the padding at zero. ``state_dict``
    returns the published shapes and ``load_state_dict`` pads what it is given, so
    checkpoints are unchanged. (No library pads a Linear's width in place; this is ours.)
    """
    layers = tower.vision_model.encoder.layers
    width = layers[0].mlp.fc1.out_features
    padded = -(-width // multiple) * multiple
    if padded == width:
        return width
    extra = padded - width
    for layer in layers:
        fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
        fc1.weight = nn.Parameter(
            F.pad(fc1.weight.detach(), (0, 0, 0, extra)), fc1.weight.requires_grad
        )
        fc1.bias = nn.Parameter(F.pad(fc1.bias.detach(), (0, extra)), fc1.bias.requires_grad)
        fc2.weight = nn.Parameter(F.pad(fc2.weight.detach(), (0, extra)), fc2.weight.requires_grad)
        fc1.out_features = fc2.in_features = padded
    suffixes = {
        "mlp.fc1.weight": (0, width),
        "mlp.fc1.bias": (0, width),
        "mlp.fc2.weight": (1, width),
    }

    def published(module, state_dict, prefix, local_metadata) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for suffix, (dim, size) in suffixes.items():
                if key.endswith(suffix):
                    state_dict[key] = state_dict[key].narrow(dim, 0, size).contiguous()

    def pad(module, state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for suffix, (dim, size) in suffixes.items():
                value = state_dict[key]
                if key.endswith(suffix) and value.shape[dim] == size:
                    pads = [0, 0] * (value.dim() - 1 - dim) + [0, extra]
                    state_dict[key] = F.pad(value, pads)

    tower.register_state_dict_post_hook(published)
    tower.register_load_state_dict_pre_hook(pad)
    return padded


def build_vision_tower(
    cfg: VisionTowerConfig, image_size: int, attention: str, crop_remainder: bool = False
) -> VisionTower:
    """SigLIP at ``image_size`` (So400m/14 at 224 gives 16 x 16 = 256 tokens per image),
    initialized as SigLIP initializes itself. ``crop_remainder`` allows a size that is not a
    multiple of the patch: the patch convolution drops the last ``image_size % patch`` pixels,
    as So400m/14 at 384 px (27 x 27 patches) was trained."""
    if image_size % cfg.patch_size and not crop_remainder:
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
