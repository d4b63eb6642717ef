"""LeRobot 0.4.4's own Pi0 (``PI0Pytorch``) as a numerical reference, on stock transformers.

LeRobot's Pi0 expects openpi's patched transformers ("transformers_replace"). On stock
transformers 4.57 it needs these patches, applied by :func:`openpi_math` and undone on exit:

1. the fork's installation check module (``transformers.models.siglip.check``);
2. the fork's two Gemma additions in their no-condition form (Pi0 has no adaRMS):
   ``GemmaRMSNorm(x, cond=None) -> (normed, None)`` and ``_gated_residual``;
3. a fresh copy of the prefix KV cache per denoising step (stock ``DynamicCache`` grows);
4. no ``1/sqrt(width)`` scaling of PaliGemma's image features (the fork removes it, and the
   published weights were trained without it);
5. no ``sqrt(width)`` input normalizer in ``GemmaModel.forward`` (removed by the fork too;
   LeRobot's inference path goes through it, its training path does not).

1-3 are what ``shared/peer/lerobot_pi0_shims.py`` does; without 4 and 5 the reference's
losses and sampled actions are not openpi's. :func:`build_reference` makes a reduced model
(small widths and vocabulary) so that the comparison runs on a CPU in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Small:
    """Reduced sizes (LeRobot hard-codes SigLIP's MLP width 4304 and 8 attention heads)."""

    vision_width: int = 48
    vision_depth: int = 2
    vision_heads: int = 2
    vision_mlp: int = 4304
    patch: int = 14
    image: int = 56
    vlm_width: int = 64
    expert_width: int = 32
    depth: int = 2
    vlm_mlp: int = 128
    expert_mlp: int = 64
    heads: int = 8  # LeRobot's joint layer hard-codes 8 heads in a reshape
    head_dim: int = 8
    vocab: int = 600  # >= the bundled tabletop tokenizer
    chunk: int = 6
    text: int = 7


@contextlib.contextmanager
def openpi_math(small: Small | None, openpi_fixes: bool = True) -> Iterator[types.ModuleType]:
    """Patch stock transformers and LeRobot as the docstring says; yields ``modeling_pi0``.

    ``small`` shrinks the models built inside (None keeps LeRobot's full sizes);
    ``openpi_fixes=False`` leaves out patches 4 and 5 (the peer's setting).
    """
    from transformers.models.gemma import modeling_gemma
    from transformers.models.paligemma import modeling_paligemma

    missing = object()
    undo: list[tuple[object, str, object]] = []

    def patch(obj: object, name: str, value: object) -> None:
        undo.append((obj, name, getattr(obj, name, missing)))
        setattr(obj, name, value)

    check = types.ModuleType("transformers.models.siglip.check")
    check.check_whether_transformers_replace_is_installed_correctly = lambda: True
    had_check = "transformers.models.siglip.check" in sys.modules
    sys.modules["transformers.models.siglip.check"] = check

    rms_forward = modeling_gemma.GemmaRMSNorm.forward

    def rms_with_cond(self, x, cond=None):
        assert cond is None, "Pi0 has no adaRMS condition"
        return rms_forward(self, x), None

    def plain_rms(self, x, *args, **kwargs):
        return rms_with_cond(self, x, **kwargs) if "cond" in kwargs else rms_forward(self, x)

    patch(modeling_gemma.GemmaRMSNorm, "forward", plain_rms)
    patch(
        modeling_gemma,
        "_gated_residual",
        lambda x, y, gate: x + y if gate is None else x + y * gate,
    )

    def image_features(self, pixel_values):
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    if openpi_fixes:
        patch(modeling_paligemma.PaliGemmaModel, "get_image_features", image_features)
    gemma_forward = modeling_gemma.GemmaModel.forward

    def forward_without_normalizer(self, *args, inputs_embeds=None, **kwargs):
        if inputs_embeds is not None:  # stock multiplies by exactly this; openpi does not
            normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=inputs_embeds.dtype)
            inputs_embeds = inputs_embeds / normalizer
        return gemma_forward(self, *args, inputs_embeds=inputs_embeds, **kwargs)

    if openpi_fixes:
        patch(modeling_gemma.GemmaModel, "forward", forward_without_normalizer)

    # lerobot.policies/__init__ imports every policy; load only Pi0.
    import lerobot

    if "lerobot.policies" not in sys.modules:
        policies = types.ModuleType("lerobot.policies")
        policies.__path__ = [os.path.join(os.path.dirname(lerobot.__file__), "policies")]
        sys.modules["lerobot.policies"] = policies
    from lerobot.policies.pi0 import modeling_pi0

    denoise = modeling_pi0.PI0Pytorch.denoise_step

    def denoise_fresh_cache(self, state, prefix_pad_masks, past_key_values, x_t, timestep):
        return denoise(self, state, prefix_pad_masks, copy.deepcopy(past_key_values), x_t, timestep)

    patch(modeling_pi0.PI0Pytorch, "denoise_step", denoise_fresh_cache)

    if small is not None:
        widths = {
            "gemma_2b": (small.vlm_width, small.vlm_mlp),
            "gemma_300m": (small.expert_width, small.expert_mlp),
        }

        def gemma_config(variant):
            width, mlp = widths[variant]
            return modeling_pi0.GemmaConfig(width, small.depth, mlp, small.heads, 1, small.head_dim)

        patch(modeling_pi0, "get_gemma_config", gemma_config)
        paligemma_cls, expert_cls = (
            modeling_pi0.PaliGemmaForConditionalGeneration,
            modeling_pi0.GemmaForCausalLM,
        )

        def small_paligemma(config):
            v = config.vision_config
            v.hidden_size, v.num_hidden_layers = small.vision_width, small.vision_depth
            v.num_attention_heads, v.patch_size = small.vision_heads, small.patch
            v.projection_dim = config.text_config.hidden_size
            config.text_config.vocab_size = small.vocab
            config._vocab_size = small.vocab
            return paligemma_cls(config)

        def small_expert(config):
            config.vocab_size = small.vocab
            return expert_cls(config)

        patch(modeling_pi0, "PaliGemmaForConditionalGeneration", small_paligemma)
        patch(modeling_pi0, "GemmaForCausalLM", small_expert)
    try:
        yield modeling_pi0
    finally:
        for obj, name, value in reversed(undo):
            if value is missing:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
        if not had_check:
            sys.modules.pop("transformers.models.siglip.check", None)


def build_reference(modeling_pi0: types.ModuleType, small: Small | None, device: str = "cpu"):
    """``PI0Pytorch`` in float32 with LeRobot's own initialization (reduced with ``small``,
    LeRobot's defaults otherwise: 224 px, 48 text tokens, chunk 50)."""
    from lerobot.policies.pi0.configuration_pi0 import PI0Config

    sizes = {}
    if small is not None:
        sizes = {
            "chunk_size": small.chunk,
            "n_action_steps": small.chunk,
            "image_resolution": (small.image, small.image),
            "tokenizer_max_length": small.text,
        }
    cfg = PI0Config(dtype="float32", device=device, **sizes)
    return modeling_pi0.PI0Pytorch(cfg).eval()


def our_config(small: Small):
    """vlaexp's Pi0Config of the same sizes."""
    from vlaexp.config.policy import GemmaStackConfig, Pi0Config, VisionTowerConfig

    return Pi0Config(
        image_size=small.image,
        chunk_size=small.chunk,
        n_action_steps=small.chunk,
        vision=VisionTowerConfig(
            small.vision_width,
            small.vision_depth,
            small.vision_mlp,
            small.vision_heads,
            small.patch,
        ),
        vlm=GemmaStackConfig(
            small.vlm_width, small.depth, small.vlm_mlp, small.heads, 1, small.head_dim
        ),
        expert=GemmaStackConfig(
            small.expert_width, small.depth, small.expert_mlp, small.heads, 1, small.head_dim
        ),
        vocab_size=small.vocab,
        tokenizer_max_length=small.text,
        dtype="float32",
    )
