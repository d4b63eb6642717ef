"""Pi0 / Pi0.5 as vlaexp policies (LightningModules with LeRobot's interface).

The policy turns LeRobot-style batches into the network's inputs (normalization, padding
to 32 dims, prompts and tokens, camera list with masks) and owns the training controls:
parameter dtypes, frozen parts, LoRA, gradient checkpointing, autocast.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.gemma.modeling_gemma import GemmaMLP
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from vlaexp.config.policy import Pi0Config, Pi05Config
from vlaexp.data.transforms import augment_camera
from vlaexp.errors import ConfigError, VlaexpError
from vlaexp.policies.base import ACTION, STATE, VLAPolicy, image_key
from vlaexp.policies.pi0.model import CudaGraphSampler, Pi0Model, compile_sampling
from vlaexp.policies.pi0.prompt import (
    discretize_state,
    load_tokenizer,
    pi0_prompt,
    pi05_prompt,
    tokenize,
)
from vlaexp.policies.pi0.vision import pad_mlp_width
from vlaexp.policies.pi0.weights import load_pretrained_weights, read_lerobot_stats
from vlaexp.training.pretrained import tokenizer_assets

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
# Kept in float32 when the rest is bfloat16: SigLIP's patch and position embeddings and every
# Gemma RMSNorm, adaptive ones included (LeRobot/openpi's choice), and SigLIP's LayerNorms
# (CUDA autocast computes those in float32 anyway; CPU autocast needs float32 weights).
FP32_PARAMS = ("vision_tower.vision_model.embeddings.", "layernorm", "layer_norm", ".norm.")
# Action-side heads: trained even when LoRA freezes the rest.
HEADS = ("action_in_proj", "action_out_proj", "state_proj", "action_time_mlp", "time_mlp")

ADVANTAGE_KEY = "advantage_positive"  # the column the value_advantage stage writes


class Pi0Policy(VLAPolicy):
    config_class = Pi0Config
    allows_missing_cameras = True
    # FSDP units: SigLIP's layers and both Gemma stacks' MLPs (~90% of the weights). The
    # joint attention calls a Gemma layer's norms and projections one by one, never the
    # layer's forward(), so those stay in the root unit (see joint.py).
    fsdp_blocks = (GemmaMLP, SiglipEncoderLayer)

    def __init__(
        self,
        config: Pi0Config,
        dataset_stats: dict[str, dict[str, np.ndarray]] | None = None,
        assets_dir: Path | None = None,
    ):
        super().__init__(config, dataset_stats, assets_dir)
        self._validate(config)
        self.pi05 = config.type != "pi0"  # pi05 and the policies built on its backbone
        self.tokenizer = load_tokenizer(
            config.tokenizer, assets_dir / TOKENIZER_DIR if assets_dir else None
        )
        if len(self.tokenizer) > config.vocab_size:
            raise ConfigError(
                f"policy.vocab_size={config.vocab_size} is smaller than the tokenizer "
                f"'{config.tokenizer}' ({len(self.tokenizer)} tokens)"
            )
        self.model = self.build_model(config)
        if config.pretrained:
            directory = self.load_weights(config.pretrained)
            stats = read_lerobot_stats(directory)
            if dataset_stats is None and stats is not None:
                self.normalizer.set_stats(stats)
        self._set_dtypes()
        self._set_trainable()
        if config.vision.mlp_pad_multiple:
            pad_mlp_width(self.model.vision_tower, config.vision.mlp_pad_multiple)
        if config.lora.enabled:
            self._add_lora()
        self._warned_missing: set[str] = set()
        self._sampler: CudaGraphSampler | None = None
        if config.compile:
            self.model.forward = torch.compile(self.model.forward)
            compile_sampling(self.model)

    def build_model(self, config: Pi0Config) -> Pi0Model:
        return Pi0Model(config)

    def load_weights(self, source: str) -> Path:
        """``policy.pretrained``'s weights into the model, strictly; returns their directory."""
        return load_pretrained_weights(self.model, source, self.pi05, "policy.pretrained")

    @staticmethod
    def _validate(config: Pi0Config) -> None:
        if config.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"policy.dtype must be float32 or bfloat16, got '{config.dtype}'")
        adv = getattr(config, "advantage", None)
        if adv is not None and adv.enabled and not 0.0 <= adv.dropout < 1.0:
            raise ConfigError(f"policy.advantage.dropout must be in [0, 1), got {adv.dropout}")
        if config.attention not in ("sdpa", "eager"):
            raise ConfigError(f"policy.attention must be sdpa or eager, got '{config.attention}'")
        for what, dim, most in (
            ("state_dim", config.state_dim, config.max_state_dim),
            ("action_dim", config.action_dim, config.max_action_dim),
        ):
            if dim > most:
                raise ConfigError(f"policy.{what}={dim} exceeds policy.max_{what}={most}")

    # ----- training controls ------------------------------------------------------------
    def _set_dtypes(self) -> None:
        if self.config.dtype != "bfloat16":
            return
        for name, param in self.model.named_parameters():
            keep = any(s in name for s in FP32_PARAMS) or (
                self.config.vision_fp32 and name.startswith("vision_tower.")
            )
            param.data = param.data.to(torch.float32 if keep else torch.bfloat16)

    def _set_trainable(self) -> None:
        cfg, m = self.config, self.model
        frozen = []
        if cfg.freeze_vision_encoder or cfg.train_expert_only:
            frozen.append(m.vision_tower)
        if cfg.train_expert_only:
            frozen += [m.projector, m.embed_tokens, m.vlm]
        # The prefix's output after the last VLM layer is never used (only its keys and
        # values are), so these get no gradient; frozen so that optimizers skip them and
        # DDP finds no unused parameters.
        last = m.vlm.layers[-1]
        frozen += [m.vlm.norm, last.self_attn.q_proj, last.self_attn.o_proj]
        frozen += [last.post_attention_layernorm, last.mlp]
        for module in frozen:
            module.requires_grad_(False)

    def _add_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        lora = self.config.lora
        inject_adapter_in_model(
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
            ),
            self.model,
        )
        for name, param in self.model.named_parameters():
            param.requires_grad_("lora_" in name or name.startswith(HEADS))

    def train(self, mode: bool = True) -> Pi0Policy:
        super().train(mode)
        if self.config.freeze_vision_encoder or self.config.train_expert_only:
            self.model.vision_tower.eval()  # frozen parts keep inference behaviour
        return self

    def autocast(self) -> AbstractContextManager:
        """bfloat16 autocast when the weights are bfloat16 (mixed float32 norms need it).
        Its weight-cast cache is off: the weights are bf16 already, and cached casts would not
        survive a CUDA graph capture."""
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return nullcontext()

    # ----- inputs -----------------------------------------------------------------------
    def _images(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One float[B, 3, S, S] per configured camera; bool[B] False for missing ones."""
        size = self.config.image_size
        present = [c for c in self.config.cameras if image_key(c) in batch]
        if not present:
            raise KeyError(
                f"batch has none of the policy's cameras {list(self.config.cameras)} "
                f"(keys: {sorted(k for k in batch if k.startswith('observation.images'))})"
            )
        ref = batch[image_key(present[0])]
        images, masks = [], []
        for cam in self.config.cameras:
            img = batch.get(image_key(cam))
            if img is None:
                if cam not in self._warned_missing:
                    log.warning("camera '%s' is missing: fed as a masked blank image", cam)
                    self._warned_missing.add(cam)
                images.append(torch.full_like(ref, -1.0))
                masks.append(torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device))
                continue
            if tuple(img.shape[-2:]) != (size, size):
                raise ValueError(
                    f"{image_key(cam)} is {tuple(img.shape[-2:])}, the policy takes {size}x{size} "
                    "(prepare images with data.transforms.prepare_images at policy.image_size)"
                )
            img = img.float()
            if self.training and self.config.augment.enabled:
                img = augment_camera(img, self.config.augment, cam)
            images.append(img)
            masks.append(torch.ones(img.shape[0], dtype=torch.bool, device=img.device))
        return images, masks

    def _state(self, batch: dict[str, Any]) -> torch.Tensor:
        """Normalized state zero-padded to float[B, max_state_dim]."""
        state = self.normalizer.normalize(STATE, batch[STATE].float())
        return F.pad(state, (0, self.config.max_state_dim - state.shape[-1]))

    def prompts(
        self, tasks: list[str], state: torch.Tensor, advantage: list[str | None] | None = None
    ) -> list[str]:
        advantage = advantage or [None] * len(tasks)
        if not self.pi05 or not self.discrete_state:
            return [pi0_prompt(t, a) for t, a in zip(tasks, advantage, strict=True)]
        bins = discretize_state(state.detach().float().cpu().numpy())
        return [pi05_prompt(t, b, a) for t, b, a in zip(tasks, bins, advantage, strict=True)]

    @property
    def discrete_state(self) -> bool:
        """Pi0.5 writes its state into the prompt (openpi's ``discrete_state_input``)."""
        return self.pi05 and bool(getattr(self.config, "discrete_state_input", True))

    @property
    def advantage_conditioned(self) -> bool:
        adv = getattr(self.config, "advantage", None)
        return bool(adv is not None and adv.enabled)

    def _advantage_indicators(
        self, batch: dict[str, Any], n: int, labels: bool = True
    ) -> list[str | None] | None:
        """Per sample "positive" / "negative" / None (no indicator), or None when the policy
        is not advantage-conditioned. ``labels`` (the loss, training and validation): the
        batch's labels, a ``policy.advantage.dropout`` share of them dropped in training;
        otherwise (acting) "positive"."""
        if not self.advantage_conditioned:
            return None
        if not labels:
            return ["positive"] * n
        if ADVANTAGE_KEY not in batch:
            raise VlaexpError(
                f"policy.advantage.enabled=true needs '{ADVANTAGE_KEY}' in every training batch: "
                "run the value_advantage stage (policy=value_fn) and train on the dataset it "
                "writes (data.source=lerobot data.root=<run dir>/advantage_dataset)"
            )
        flags = torch.as_tensor(batch[ADVANTAGE_KEY]).reshape(-1).bool().tolist()
        dropout = self.config.advantage.dropout if self.training else 0.0
        keep = (torch.rand(n) >= dropout).tolist()
        return [
            ("positive" if f else "negative") if k else None
            for f, k in zip(flags, keep, strict=True)
        ]

    def _inputs(
        self, batch: dict[str, Any], indicator: bool = True, labels: bool = False
    ) -> tuple[Any, ...]:
        """Model inputs of a batch. Advantage-conditioned policies: ``labels`` puts the
        batch's advantage labels in the prompts (the loss), else "positive" (acting);
        ``indicator=False`` leaves the indicator out (guidance's unconditioned branch)."""
        images, masks = self._images(batch)
        state = self._state(batch)
        tasks = batch["task"]
        tasks = [tasks] * state.shape[0] if isinstance(tasks, str) else list(tasks)
        advantage = self._advantage_indicators(batch, len(tasks), labels) if indicator else None
        tokens, token_mask = tokenize(
            self.tokenizer, self.prompts(tasks, state, advantage), self.config.tokenizer_max_length
        )
        # whether the prefix has padding, known here on the host (a camera missing from the
        # batch, the tokenizer's mask before it moves): the model's forward needs no sync
        self._unpadded = bool(token_mask.all()) and all(
            image_key(c) in batch for c in self.config.cameras
        )
        tokens, token_mask = tokens.to(self.device), token_mask.to(self.device)
        return images, masks, tokens, token_mask, (None if self.pi05 else state)

    # ----- the contract -----------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        images, masks, tokens, token_mask, state = self._inputs(batch, labels=True)
        actions = self.normalizer.normalize(ACTION, batch[ACTION].float())
        dim = actions.shape[-1]
        actions = F.pad(actions, (0, self.config.max_action_dim - dim))
        with self.autocast():
            losses = self.model(
                images, masks, tokens, token_mask, state, actions, unpadded=self._unpadded
            )
        losses = losses[..., :dim]
        if self.config.mask_padded_actions and "action_is_pad" in batch:
            valid = (~batch["action_is_pad"]).unsqueeze(-1).to(losses.dtype)
            loss = (losses * valid).sum() / (valid.sum() * dim).clamp_min(1.0)
        else:
            loss = losses.mean()
        return loss, {}

    @torch.no_grad()
    def predict_action_chunk(
        self, batch: dict[str, Any], noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        images, masks, tokens, token_mask, state = self._inputs(batch)
        if noise is None:
            shape = (tokens.shape[0], self.config.chunk_size, self.config.max_action_dim)
            noise = torch.randn(shape, device=self.device)
        inputs = (images, masks, tokens, token_mask, state, noise)
        beta = self.config.advantage.guidance if self.advantage_conditioned else 1.0
        if beta != 1.0:  # classifier-free guidance: eager, both prompts in one batch
            _, _, u_tokens, u_mask, _ = self._inputs(batch, indicator=False)
            with self.autocast():
                actions = self.model.sample_actions(*inputs, guidance=(u_tokens, u_mask, beta))
        elif self.config.cuda_graphs and self.device.type == "cuda":
            if self._sampler is None or not self._sampler.matches(self.model, inputs):
                self._sampler = CudaGraphSampler(self.model, inputs, self.autocast)
            actions = self._sampler(*inputs)
        else:
            with self.autocast():
                actions = self.model.sample_actions(*inputs)
        return self.normalizer.unnormalize(ACTION, actions[..., : self.config.action_dim].float())

    @torch.no_grad()
    def vision_tokens(self, batch: dict[str, Any], project: bool = True) -> dict[str, torch.Tensor]:
        """The image tokens the prefix starts with (vision tower + projector), per camera in
        the batch: ``{camera: float32[B, tokens, vlm width]}``. This is the tap that RND
        uncertainty reads: the policy's own view of the scene, prepared as for acting.
        ``project=False``: the vision tower's features before the (linear) projector
        ``self.model.projector``, ``float32[B, tokens, vision width]``, which RNDs with the
        projector folded in read (``vlaexp.uncertainty.rnd.FoldedRND``)."""
        images, masks = self._images(batch)
        with self.autocast():
            feats = self.model.embed_images(images, project=project)
        return {
            cam: f.float()
            for cam, f, m in zip(self.config.cameras, feats, masks, strict=True)
            if bool(m.all())
        }

    def pretrained_assets(self) -> dict[str, bytes]:
        """The tokenizer travels with the weights: evaluation never needs the hub."""
        return tokenizer_assets(self.tokenizer, TOKENIZER_DIR)


class Pi05Policy(Pi0Policy):
    config_class = Pi05Config
