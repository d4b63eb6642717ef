"""Structured config of the distributional value function (``policy=value_fn``).

Saved as ``config.json`` beside the weights, like a policy's, so a trained value function
rebuilds from its ``pretrained_model/`` directory alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlaexp.config.policy import (
    ImageAugmentConfig,
    OptimizerConfig,
    SchedulerConfig,
    VisionTowerConfig,
)
from vlaexp.errors import ConfigError


@dataclass
class Gemma3LMConfig:
    """The language model; field names are ``transformers.Gemma3TextConfig``'s, so the
    settings pass to it unchanged (defaults: Gemma-3-270M)."""

    hidden_size: int = 640
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    intermediate_size: int = 2048
    vocab_size: int = 262144
    max_position_embeddings: int = 32768
    sliding_window: int = 512
    query_pre_attn_scalar: int = 256
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rms_norm_eps: float = 1e-6


@dataclass
class AlignConfig:
    """Stage 1 (the ``value_align`` stage, :mod:`vlaexp.value.align`): the projector alone
    learns captions of images with SigLIP and Gemma frozen. ``source``: ``sim`` (captioned
    scenes of the run's task suite, ``scenes_per_task`` each) or ``hub`` (``repo_id``, a hub
    id or local dir, ``split``, an ``image_column`` and ``text_columns``: prompt..., target;
    at most ``limit`` rows)."""

    source: str = "sim"
    scenes_per_task: int = 50
    repo_id: Any = None  # e.g. a VQAv2 subset such as HuggingFaceM4/VQAv2
    split: str = "train"
    image_column: str = "image"
    text_columns: list[str] = field(default_factory=lambda: ["question", "multiple_choice_answer"])
    limit: int = 5000
    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 96  # prompt + caption tokens
    val_fraction: float = 0.1


@dataclass
class ValueFunctionConfig:
    """A stitched VLM reading camera images and the task text; a linear head on the last
    real token's hidden state gives logits over ``n_bins`` value bins on ``value_range``.

    Not a :class:`~vlaexp.config.policy.PolicyConfig`: it has no state, actions or chunks.
    """

    type: str = "value_fn"
    name: str = "value_fn"
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    image_size: int = 384  # square side images are resized (with padding) to
    # training-time image augmentation (the policies' recipe; off by default, as for them)
    augment: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)  # So400m/14
    projector_hidden: int = 1152  # MLP vision width -> projector_hidden -> lm.hidden_size
    lm: Gemma3LMConfig = field(default_factory=Gemma3LMConfig)
    n_bins: int = 201
    value_range: list[float] = field(default_factory=lambda: [-1.0, 0.0])
    loss: str = "ce"  # ce | hl_gauss
    sigma_bins: float = 0.75  # HL-Gauss width in bin widths
    c_fail: Any = None  # failure penalty in steps; None = half the task's longest episode
    # The episode step as an input: null = images and task text alone; a step count H = the
    # frame's step t enters as one more token, embedded from t / H (H: the suite's step limit).
    # Under a time limit the value depends on the time left, which a frame alone need not show
    # (a failure run to the limit: its labels count down to the limit whatever it looks like);
    # Pardo et al. 2018, "Time Limits in Reinforcement Learning".
    time_horizon: Any = None
    # With the step as input: the share of training samples whose step token is replaced by a
    # learned "step unknown" token (one model then predicts with and without the step; value_eval
    # reports both). Why: with the step, the seventh session's model leaned on it and valued
    # early success frames toward the mix of outcomes at that step (midpoint AUROC 0.85 -> 0.72,
    # experiments/value_function); dropping an input makes the model learn the others too.
    time_dropout: float = 0.0
    # Earlier frames as inputs: each camera's frames this many steps before the current one
    # (e.g. [4]) enter beside it, oldest first, each its own image tokens; before the episode's
    # start its first frame stands in (LeRobot's delta_timestamps clamp to the episode). Why: a
    # frame shows where the arm is, not how it moves, and the perturbed mix's failures differ
    # from successes in motion (jittered actions, a frozen arm) long before their outcome
    # (experiments/value_function: midpoint AUROC 0.735 +- 0.044 over five seeds from one frame).
    frame_history: list[int] = field(default_factory=list)
    # The value_advantage stage (vlaexp.value.advantage): N of the N-step advantage (null:
    # Monte-Carlo) and the share of each task's frames labelled advantage_positive.
    advantage_horizon: Any = 50
    advantage_positive_fraction: float = 0.3
    plot_episodes: int = 8  # value_eval: value-over-time plots of this many test episodes
    # Hub id or local dir (AutoTokenizer), or a tokenizer bundled with vlaexp (`tabletop`).
    tokenizer: str = "google/gemma-3-270m"
    tokenizer_max_length: int = 48
    # Weights to start from (hub id or local dir, transformers' from_pretrained); None = random.
    vision_pretrained: Any = None  # e.g. google/siglip-so400m-patch14-384
    lm_pretrained: Any = None  # e.g. google/gemma-3-270m
    attention: str = "sdpa"  # sdpa | eager
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=5e-5, betas=[0.9, 0.95], weight_decay=0.01)
    )
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(
            warmup_steps=500, decay_steps=20_000, final_lr_ratio=0.1
        )
    )
    path: Any = None  # a saved value function to start from (pretrained_model dir or run dir)
    align: AlignConfig = field(default_factory=AlignConfig)
    # Stage 2 starts from stage 1's projector: a projector.safetensors or a run dir that ran
    # value_align (a run that aligns before `train` fills it in). require_projector: a new
    # value function without one is an error, not a random projector.
    projector_path: Any = None
    require_projector: bool = False
    # Stage 2 co-training: this fraction of training steps also takes the caption loss of a
    # stage-1 batch (value_align's captions.pt), so the projector keeps its alignment.
    cotrain_fraction: float = 0.0

    def check(self) -> None:
        if self.n_bins < 2:
            raise ConfigError(f"policy.n_bins={self.n_bins} must be >= 2")
        if [float(v) for v in self.value_range] != [-1.0, 0.0]:
            raise ConfigError(
                f"policy.value_range={list(self.value_range)}: the labels are normalized "
                "time-to-go values on [-1, 0] (vlaexp.value.labels), so it must be [-1.0, 0.0]"
            )
        if self.time_horizon is not None and not float(self.time_horizon) > 0:
            raise ConfigError(
                f"policy.time_horizon must be a positive step count or null, got {self.time_horizon}"
            )
        if not 0.0 <= float(self.time_dropout) < 1.0:
            raise ConfigError(f"policy.time_dropout must be in [0, 1), got {self.time_dropout}")
        if self.time_dropout and self.time_horizon is None:
            raise ConfigError(
                f"policy.time_dropout={self.time_dropout} drops the step token, but there is "
                "none: set policy.time_horizon too"
            )
        history = [int(k) for k in self.frame_history]
        if any(k < 1 for k in history) or len(set(history)) != len(history):
            raise ConfigError(
                "policy.frame_history lists distinct steps back (positive integers, e.g. [4]), "
                f"got {list(self.frame_history)}"
            )
        if self.loss not in ("ce", "hl_gauss"):
            raise ConfigError(f"policy.loss must be 'ce' or 'hl_gauss', got '{self.loss}'")
        if self.attention not in ("sdpa", "eager"):
            raise ConfigError(f"policy.attention must be 'sdpa' or 'eager', got '{self.attention}'")
        if not 0.0 <= self.cotrain_fraction <= 1.0:
            raise ConfigError(
                f"policy.cotrain_fraction must be in [0, 1], got {self.cotrain_fraction}"
            )
        if not self.cameras:
            raise ConfigError("policy.cameras is empty: the value function needs images")
