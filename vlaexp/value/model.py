"""The distributional value function: a stitched VLM on stock transformers blocks.

    SigLIP vision transformer (no pooling head), per camera -> float[B, N, vision width]
    MLP projector (width -> projector_hidden -> lm width, tanh-GELU)
    Gemma-3 text model over [image tokens of every camera, task text tokens]
    Linear(lm width -> n_bins) on the final hidden state of the last real text token
    (``time_horizon`` set: one more token before the text, Linear(Fourier features of t / H);
    with ``time_dropout``, a learned "step unknown" token in its place for a share of training
    samples, and on request at inference)

``policy=value_fn`` is SigLIP So400m/14 at 384 px + Gemma-3-270M; ``policy=value_fn_tiny``
is the same code at small widths. Batches (from the DataModule with value labels)::

    observation.images.<camera>  float[B, 3, S, S] in [-1, 1]; with ``frame_history`` (k
                                 steps back each) float[B, T, 3, S, S], T = 1 + its length,
                                 the oldest frame first: T frames of image tokens a camera
    task                         list[str] of B instructions
    frame_index                  long[B] episode steps (read only when ``time_horizon`` is set)
    value                        float[B] in [-1, 0] (training and validation only)

A trained value function saves as a policy does (``config.json``, ``model.safetensors``, the
tokenizer under ``tokenizer/``) and reloads offline with :func:`load_value_function`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import Gemma3TextConfig, Gemma3TextModel, SiglipVisionModel

from vlaexp.config.value import ValueFunctionConfig
from vlaexp.data.transforms import augment_camera
from vlaexp.errors import ConfigError, MissingPathError, VlaexpError
from vlaexp.policies.base import image_key
from vlaexp.policies.pi0.prompt import load_tokenizer, tokenize
from vlaexp.policies.pi0.vision import VisionTower, build_vision_tower
from vlaexp.training.pretrained import (
    SavesPretrained,
    is_hub_id,
    load_state_strictly,
    read_pretrained,
    resolve_pretrained,
    tokenizer_assets,
)
from vlaexp.value.labels import value_loss

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
VALUE = "value"
TIME_FREQUENCIES = 6  # octaves of the time token's Fourier features


def to_value_config(cfg: DictConfig | dict[str, Any] | ValueFunctionConfig) -> ValueFunctionConfig:
    """A typed, checked config; unknown keys or wrong types are errors naming the key."""
    if not isinstance(cfg, ValueFunctionConfig):
        merged = OmegaConf.merge(OmegaConf.structured(ValueFunctionConfig), cfg)
        cfg = OmegaConf.to_object(merged)  # type: ignore[assignment]
    cfg.check()
    return cfg


def gemma_config(cfg: ValueFunctionConfig) -> Gemma3TextConfig:
    config = Gemma3TextConfig(**dataclasses.asdict(cfg.lm))
    config._attn_implementation = cfg.attention
    return config


def _from_pretrained(model_cls: type, source: str, config: Any, setting: str) -> nn.Module:
    """``model_cls.from_pretrained(source)`` in our architecture, or an error naming
    ``setting``: a missing local path, an unreachable hub id, weights of other shapes, or a
    checkpoint that leaves any of our weights uninitialized."""
    if not Path(source).expanduser().exists() and not is_hub_id(source):
        raise MissingPathError("Pretrained weights", source, setting)
    try:
        model, info = model_cls.from_pretrained(
            str(Path(source).expanduser()) if not is_hub_id(source) else source,
            config=config,
            output_loading_info=True,
        )
    except Exception as e:
        raise VlaexpError(
            f"Could not load {model_cls.__name__} weights from '{source}' (`{setting}`): "
            f"{type(e).__name__}: {e}"
        ) from e
    if info["missing_keys"] or info["mismatched_keys"]:
        raise VlaexpError(
            f"Weights from '{source}' (`{setting}`) do not fit the configured "
            f"{model_cls.__name__}: missing keys {sorted(info['missing_keys'])}, "
            f"mismatched {info['mismatched_keys']}"
        )
    if info["unexpected_keys"]:  # e.g. SigLIP's text tower in a full SigLIP checkpoint
        log.info("%s: %d weights not used", source, len(info["unexpected_keys"]))
    return model


class ValueFunction(SavesPretrained, pl.LightningModule):
    """Logits over ``n_bins`` values of a (images, task) observation; see the module doc.

    A sibling of :class:`~vlaexp.policies.base.VLAPolicy` rather than a subclass: a value
    function has no actions, state or normalization statistics, so the policy contract's
    action methods would be meaningless here.

    Args:
        config: the value function's config.
        assets_dir: the ``pretrained_model`` directory it is being loaded from (its tokenizer).
    """

    def __init__(self, config: ValueFunctionConfig, assets_dir: Path | None = None) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.train_config_yaml: str | None = None  # embedded in checkpoints by the train stage
        self.tokenizer = load_tokenizer(
            config.tokenizer, assets_dir / TOKENIZER_DIR if assets_dir else None
        )
        if len(self.tokenizer) > config.lm.vocab_size:
            raise ConfigError(
                f"policy.lm.vocab_size={config.lm.vocab_size} is smaller than the tokenizer "
                f"'{config.tokenizer}' ({len(self.tokenizer)} tokens)"
            )
        self.vision = build_vision_tower(
            config.vision, config.image_size, config.attention, crop_remainder=True
        )
        if config.vision_pretrained:
            siglip = _from_pretrained(
                SiglipVisionModel,
                config.vision_pretrained,
                self.vision.vision_model.config,
                "policy.vision_pretrained",
            )
            self.vision = VisionTower(siglip)
        width = config.lm.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(config.vision.width, config.projector_hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(config.projector_hidden, width),
        )
        if config.lm_pretrained:
            self.lm = _from_pretrained(
                Gemma3TextModel, config.lm_pretrained, gemma_config(config), "policy.lm_pretrained"
            )
        else:
            self.lm = Gemma3TextModel(gemma_config(config))
        if assets_dir is None:  # a new value function: stage 2 starts from stage 1
            if config.projector_path:
                from vlaexp.value.align import load_projector

                load_projector(self, config.projector_path)
            elif config.require_projector:
                raise ConfigError(
                    "policy.require_projector=true but no stage-1 projector was given: run the "
                    "value_align stage before `train` (same run) or set policy.projector_path"
                )
        self.caption_batches: Any = None  # stage-1 batches for co-training (set by `train`)
        # Our own: transformers has no embedding of a scalar time; sin/cos of t / H at octave
        # frequencies (and t / H itself), projected to one LM token.
        self.time_embed = (
            nn.Linear(2 * TIME_FREQUENCIES + 1, width) if config.time_horizon is not None else None
        )
        # the "step unknown" token that replaces it (policy.time_dropout; predict without the step)
        self.time_null = nn.Parameter(torch.zeros(width)) if config.time_dropout else None
        self.head = nn.Linear(width, config.n_bins)
        low, high = config.value_range
        self.register_buffer(
            "bin_values", torch.linspace(low, high, config.n_bins), persistent=False
        )

    # ----- the network ----------------------------------------------------------------------
    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        """float[C, B, 3, S, S] of the configured cameras (float[C, B, T, 3, S, S] with
        ``frame_history``), or an error naming what is wrong."""
        have = sorted(k for k in batch if k.startswith("observation.images."))
        images = []
        size, history = self.config.image_size, len(self.config.frame_history)
        want = (3, size, size) if not history else (history + 1, 3, size, size)
        for cam in self.config.cameras:
            if image_key(cam) not in batch:
                raise VlaexpError(
                    f"The value function needs camera '{cam}' ({image_key(cam)}, from "
                    f"policy.cameras); the batch has {have}"
                )
            img = batch[image_key(cam)]
            if img.ndim != len(want) + 1 or tuple(img.shape[1:]) != want:
                frames = (
                    f" ({history + 1} frames: policy.frame_history="
                    f"{list(self.config.frame_history)} and the current one)"
                    if history
                    else ""
                )
                raise VlaexpError(
                    f"{image_key(cam)} must be float[B, {', '.join(map(str, want))}] "
                    f"(policy.image_size{frames}), "
                    f"got {list(img.shape)}"
                )
            if self.training and self.config.augment.enabled:
                img = augment_camera(img.to(self.device).float(), self.config.augment, cam)
            images.append(img)
        return torch.stack(images)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """float[B, C, 3, S, S] (C cameras) -> the LM's image tokens float[B, C*N, H]."""
        b, c = images.shape[:2]
        dtype = self.head.weight.dtype
        features = self.vision(images.flatten(0, 1).to(self.device, dtype))  # [B*C, N, W]
        return self.projector(features).unflatten(0, (b, c)).flatten(1, 2)

    def time_token(self, batch: dict[str, Any], b: int, use_step: bool = True) -> torch.Tensor:
        """float[B, 1, H]: the embedded episode step ``frame_index`` / ``time_horizon``; the
        "step unknown" token instead where ``use_step`` is false, and, in training, for a random
        ``time_dropout`` share of the samples."""
        dtype = self.head.weight.dtype
        if not use_step:
            if self.time_null is None:
                raise VlaexpError(
                    "This value function was trained with policy.time_dropout=0: its 'step "
                    "unknown' token never saw training, so it cannot predict without the step"
                )
            return self.time_null.to(dtype).expand(b, 1, -1)
        if "frame_index" not in batch:
            raise VlaexpError(
                f"This value function reads the episode step (policy.time_horizon="
                f"{self.config.time_horizon}), but the batch has no 'frame_index'"
            )
        steps = torch.as_tensor(batch["frame_index"], device=self.device).reshape(-1)
        x = steps.float() / float(self.config.time_horizon)
        angles = x[:, None] * (math.pi * 2.0 ** torch.arange(TIME_FREQUENCIES, device=x.device))
        features = torch.cat([x[:, None], angles.sin(), angles.cos()], dim=-1)
        tokens = self.time_embed(features.to(dtype))[:, None]
        if tokens.shape[0] != b:
            raise VlaexpError(f"batch has {b} images per camera but {tokens.shape[0]} frame_index")
        if self.training and self.config.time_dropout:
            drop = torch.rand(b, 1, 1, device=tokens.device) < self.config.time_dropout
            tokens = torch.where(drop, self.time_null.to(dtype), tokens)
        return tokens

    def lm_hidden(
        self, image_tokens: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Gemma's last hidden states float[B, C*N + L, H] over the image tokens (and the time
        token) followed by right-padded text ``tokens`` long[B, L] (``text_mask`` bool[B, L])."""
        b, n_image = image_tokens.shape[:2]
        tokens, text_mask = tokens.to(self.device), text_mask.to(self.device)
        # Gemma's embedding module multiplies by sqrt(width); inputs_embeds skips it, so the
        # text is embedded here with the model's own module and the image tokens join unscaled.
        text = self.lm.embed_tokens(tokens)
        embeds = torch.cat([image_tokens, text.to(image_tokens.dtype)], dim=1)
        mask = torch.cat([text_mask.new_ones(b, n_image), text_mask], dim=1)
        return self.lm(
            inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False
        ).last_hidden_state

    def logits(self, batch: dict[str, Any], use_step: bool = True) -> torch.Tensor:
        """float[B, n_bins] of a batch's images and ``task`` texts (and its steps, for a
        value function that reads them, unless ``use_step`` is false: see :meth:`time_token`)."""
        images = self._images(batch)  # [C, B, ...]
        b = images.shape[1]
        if len(batch["task"]) != b:
            raise VlaexpError(f"batch has {b} images per camera but {len(batch['task'])} tasks")
        images = images.transpose(0, 1)  # [B, C, (T,) 3, S, S]
        if self.config.frame_history:
            images = images.flatten(1, 2)  # each frame of each camera: its own image tokens
        image_tokens = self.image_tokens(images)
        if self.time_embed is not None:
            time = self.time_token(batch, b, use_step)
            image_tokens = torch.cat([image_tokens, time.to(image_tokens.dtype)], dim=1)
        tokens, text_mask = tokenize(
            self.tokenizer, list(batch["task"]), self.config.tokenizer_max_length
        )
        hidden = self.lm_hidden(image_tokens, tokens, text_mask)
        last = image_tokens.shape[1] + text_mask.to(self.device).sum(1) - 1  # last real token
        return self.head(hidden[torch.arange(b, device=self.device), last])

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, metrics) of a batch holding ``value`` float[B] in ``value_range``."""
        if VALUE not in batch:
            raise VlaexpError(
                "The batch has no 'value': build the DataModule with value labels "
                "(datamodule_from_config with policy.type=value_fn)"
            )
        values = batch[VALUE].to(self.device, torch.float32)
        low, high = self.config.value_range
        if values.numel() and (values.min() < low - 1e-6 or values.max() > high + 1e-6):
            raise VlaexpError(
                f"values must lie in policy.value_range={[low, high]}, got "
                f"[{float(values.min())}, {float(values.max())}]"
            )
        logits = self.logits(batch)
        loss = value_loss(logits.float(), values, self.config.loss, self.config.sigma_bins)
        expected = (logits.float().softmax(-1) * self.bin_values).sum(-1)
        return loss, {"mae": float((expected.detach() - values).abs().mean())}

    @torch.no_grad()
    def predict_value(
        self, batch: dict[str, Any], use_step: bool = True
    ) -> dict[str, torch.Tensor]:
        """``expected`` float[B] (sum_b p_b v_b) and ``probs`` float[B, n_bins]."""
        probs = self.logits(batch, use_step).float().softmax(-1)
        return {"expected": (probs * self.bin_values).sum(-1), "probs": probs}

    # ----- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, info = self(batch)
        bs = len(batch["task"])
        self.log("value/train_loss", loss, prog_bar=True, batch_size=bs)
        for k, v in info.items():
            self.log(f"value/train_{k}", v, batch_size=bs)
        fraction = self.config.cotrain_fraction
        if fraction > 0 and self.caption_batches is not None:
            every = max(1, round(1 / fraction))
            if self.global_step % every == 0:
                from vlaexp.value.align import caption_loss

                caption, _ = caption_loss(self, next(self.caption_batches))
                self.log("value/train_caption_loss", caption, batch_size=bs)
                loss = loss + caption
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, info = self(batch)
        bs = len(batch["task"])
        self.log("value/val_loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        for k, v in info.items():
            self.log(f"value/val_{k}", v, sync_dist=True, batch_size=bs)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = instantiate(OmegaConf.structured(self.config.optimizer))(params)
        scheduler = instantiate(OmegaConf.structured(self.config.scheduler))(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----- saving (config.json, weights, checkpoints: SavesPretrained) ------------------
    def pretrained_assets(self) -> dict[str, bytes]:
        """The tokenizer travels with the weights: reloading never needs the hub."""
        return tokenizer_assets(self.tokenizer, TOKENIZER_DIR)


# What a value function's inputs and outputs mean: a checkpoint that differs in these is refused.
_OUTPUT_FIELDS = ("n_bins", "value_range", "cameras", "image_size", "time_horizon", "frame_history")
# Training settings a run may change when it starts from a saved value function.
_TRAINING_FIELDS = ("loss", "sigma_bins", "c_fail", "time_dropout", "optimizer", "scheduler")


def load_value_function(path: str | Path, setting: str = "policy.path") -> ValueFunction:
    """Rebuild a value function from a ``pretrained_model`` dir (or a run dir / hub id).

    Strict: weights that are missing, unexpected or of other shapes than the saved config
    says are an error listing them.
    """
    directory = resolve_pretrained(path, setting)
    config_dict, state_dict, train_config = read_pretrained(directory)
    if config_dict.get("type") != "value_fn":
        raise ConfigError(
            f"{directory}/config.json is a '{config_dict.get('type')}', not a value function "
            f"(`{setting}`)"
        )
    config = to_value_config(config_dict)
    config.vision_pretrained = config.lm_pretrained = None  # the saved weights replace them
    config.path = config.projector_path = None
    model = ValueFunction(config, assets_dir=directory)
    load_state_strictly(
        model,
        state_dict,
        directory,
        f"value function of its config.json (n_bins={config.n_bins}, "
        f"lm.hidden_size={config.lm.hidden_size})",
    )
    model.train_config_yaml = train_config
    return model.eval()


def make_value_function(cfg: DictConfig | dict[str, Any] | ValueFunctionConfig) -> ValueFunction:
    """A new value function from its config, or (with ``path``) a saved one to train further.

    A saved one must agree with the config on what its inputs and outputs mean (bins, value
    range, cameras, image size, time horizon, frame history); the config's training settings
    (loss, optimizer, ...) replace the saved ones.
    """
    config = to_value_config(cfg)
    if not config.path:
        return ValueFunction(config)
    model = load_value_function(config.path)
    for name in _OUTPUT_FIELDS:
        want, have = getattr(config, name), getattr(model.config, name)
        if want != have:
            raise ConfigError(
                f"policy.{name}={want} but the value function at '{config.path}' (policy.path) "
                f"was trained with {name}={have}"
            )
    if config.time_dropout and model.time_null is None:
        raise ConfigError(
            f"policy.time_dropout={config.time_dropout} but the value function at '{config.path}' "
            "(policy.path) was trained without it and has no 'step unknown' token to train"
        )
    for name in _TRAINING_FIELDS:
        setattr(model.config, name, getattr(config, name))
    return model.train()
