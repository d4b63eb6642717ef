"""Structured configs of the `policy` and `tokenizer` groups.

A policy config is saved as ``config.json`` beside the weights, so a checkpoint rebuilds
its policy with nothing but the files in ``pretrained_model/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class OptimizerConfig:
    """A ``_partial_`` factory: the policy calls it with its parameter groups."""

    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 1e-2


@dataclass
class SchedulerConfig:
    """A ``_partial_`` factory called with the optimizer; returns a LambdaLR."""

    _target_: str = "vlaexp.training.schedules.warmup_cosine"
    _partial_: bool = True
    warmup_steps: int = 100
    decay_steps: int = 10_000
    final_lr_ratio: float = 0.1


@dataclass
class NormalizationConfig:
    """Per feature type: ``mean_std``, ``quantile`` (q01/q99 to [-1, 1]) or ``identity``."""

    state: str = "mean_std"
    action: str = "mean_std"


@dataclass
class PolicyConfig:
    """Fields every policy has. `type` picks the class in :mod:`vlaexp.policies.factory`."""

    type: str = MISSING
    name: str = MISSING
    cameras: list[str] = field(
        default_factory=lambda: ["agentview", "wrist"]
    )  # yaml: ${camera.names}
    image_size: int = 128  # square side the images are resized (with padding) to
    state_dim: int = 8
    action_dim: int = 7
    chunk_size: int = 10  # actions predicted per forward pass
    n_action_steps: int = 10  # actions executed from each chunk before predicting again
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # A saved policy (`pretrained_model/` dir, run dir or hub id): training starts from its
    # weights; the `eval` stage evaluates it when this run trains nothing (LeRobot's policy.path).
    path: Any = None


@dataclass
class BCConfig(PolicyConfig):
    """Behaviour cloning: a timm CNN per camera + state -> MLP -> an action chunk."""

    type: str = "bc"
    vision_backbone: str = "resnet10t"  # any timm model name
    pretrained_backbone: bool = False  # ImageNet weights through timm (needs the hub)
    hidden_dim: int = 256
    n_layers: int = 2
    dropout: float = 0.0
    loss: str = "l1"  # l1 | mse


@dataclass
class TokenizerConfig:
    """Action tokenizer; ``none`` leaves actions continuous."""

    type: str = "none"
    name: str = "none"


@dataclass
class ImageAugmentConfig:
    """Training-time image augmentation, openpi's recipe for Pi0: each image gets its own
    random crop (``crop_scale`` of each side, resized back) and rotation (up to
    ``rotate_deg``), except cameras named in ``no_geometric`` (the wrist view: openpi skips
    any camera whose key holds "wrist"); every image gets colour jitter (brightness,
    contrast, saturation factors drawn from 1 +- the value). Never applied at evaluation."""

    enabled: bool = False
    crop_scale: float = 0.95
    rotate_deg: float = 5.0
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    no_geometric: list[str] = field(default_factory=lambda: ["wrist"])


@dataclass
class VisionTowerConfig:
    """SigLIP vision encoder (defaults: So400m/14, PaliGemma's, without the pooling head)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    # Speed only: pad each MLP's hidden width with zero weights up to a multiple of this
    # (4304 -> 4352 at 128), so its GEMMs run on aligned tiles. The function, the gradients
    # and the saved weights' shapes stay those of the published checkpoints. 0 = off.
    mlp_pad_multiple: int = 0


@dataclass
class GemmaStackConfig:
    """One Gemma decoder stack (defaults: Gemma-2B, PaliGemma's language model)."""

    width: int = 2048
    depth: int = 18
    mlp_dim: int = 16384
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256


@dataclass
class LoraSettings:
    """LoRA adapters through peft; ``target_modules`` is a regex over module names."""

    enabled: bool = False
    rank: int = 16
    alpha: int = 16
    dropout: float = 0.0
    # The expert's attention and MLP projections (LeRobot's default targets are the expert's q/v).
    target_modules: str = r"expert\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class Pi0Config(PolicyConfig):
    """Pi0: PaliGemma (SigLIP + Gemma-2B) and a Gemma-300M action expert, flow matching.

    ``type: pi05`` (:class:`Pi05Config`) is Pi0.5: the state discretized into the prompt and
    the flow time injected by adaptive RMSNorm in the expert.
    """

    type: str = "pi0"
    image_size: int = 224
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32  # state and actions are zero-padded to these sizes
    max_action_dim: int = 32
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    vlm: GemmaStackConfig = field(default_factory=GemmaStackConfig)
    expert: GemmaStackConfig = field(
        default_factory=lambda: GemmaStackConfig(width=1024, mlp_dim=4096)
    )
    vocab_size: int = 257152
    # From scratch only (pretrained weights replace it): the token embedding's init, N(0,
    # std). None keeps torch's N(0, 1), which the prefix then multiplies by sqrt(width) (Gemma's
    # convention for its trained table, whose rows are small); 0.02 is Gemma's
    # initializer_range. Pi0.5 reads its state as number tokens of this table.
    embedding_init_std: Any = None
    # Hub id or local dir (AutoTokenizer), or the name of a tokenizer bundled with vlaexp
    # (`tabletop`: a small BPE vocabulary of the offline suites, for tiny policies).
    tokenizer: str = "google/paligemma-3b-pt-224"
    tokenizer_max_length: int = 48
    # LeRobot/openpi-PyTorch weights to start from: hub id (`lerobot/pi0_base`) or a local dir
    # holding model.safetensors. Loaded strictly through vlaexp.policies.pi0.weights.
    pretrained: Any = None
    num_inference_steps: int = 10
    time_beta_alpha: float = 1.5  # t ~ Beta(alpha, beta) * scale + offset
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    min_period: float = 4e-3  # sin-cos time embedding
    max_period: float = 4.0
    mask_padded_actions: bool = True  # leave actions past an episode's end out of the loss
    augment: ImageAugmentConfig = field(default_factory=ImageAugmentConfig)
    # Parameter storage: bfloat16 keeps the vision embeddings and every norm in float32 (as
    # LeRobot/openpi do); vision_fp32 keeps the whole vision tower in float32.
    dtype: str = "float32"
    vision_fp32: bool = False
    attention: str = "sdpa"  # sdpa | eager (eager is the reference's exact arithmetic)
    gradient_checkpointing: bool = False
    freeze_vision_encoder: bool = False
    train_expert_only: bool = False  # freeze the whole VLM (vision, projector, Gemma-2B)
    lora: LoraSettings = field(default_factory=LoraSettings)
    compile: bool = False  # torch.compile the training forward, the prefix pass, the denoising step
    cuda_graphs: bool = True  # on a GPU, sample each chunk by replaying a captured CUDA graph
    normalization: NormalizationConfig = field(
        default_factory=lambda: NormalizationConfig(state="mean_std", action="mean_std")
    )
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=2.5e-5, betas=[0.9, 0.95], weight_decay=0.01)
    )
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(
            warmup_steps=1000, decay_steps=30_000, final_lr_ratio=0.1
        )
    )


@dataclass
class AdvantageConditioningConfig:
    """RECAP's advantage conditioning (Pi0.5). Training: the prompt says "Advantage:
    positive" or "Advantage: negative" after the state, from the dataset's
    ``advantage_positive`` column (the ``value_advantage`` stage writes that dataset), and
    leaves the indicator out for ``dropout`` of the samples, so the policy also learns the
    prompt without it. Acting: "positive", with classifier-free guidance of weight
    ``guidance`` (beta): v = v_none + beta * (v_positive - v_none) at every denoising step;
    1.0 is the positive-conditioned policy alone (one pass, no guidance cost)."""

    enabled: bool = False
    dropout: float = 0.3
    guidance: float = 1.0


@dataclass
class Pi05Config(Pi0Config):
    type: str = "pi05"
    tokenizer_max_length: int = 200
    # openpi's flag: the state discretized into the prompt (True, the published default), or no
    # state at all (False: the prompt is Pi0's "<task>\n"; openpi's `pi05_libero` trains so)
    discrete_state_input: bool = True
    advantage: AdvantageConditioningConfig = field(default_factory=AdvantageConditioningConfig)
    normalization: NormalizationConfig = field(
        default_factory=lambda: NormalizationConfig(state="quantile", action="quantile")
    )


@dataclass
class RVQPolicyConfig(Pi05Config):
    """`policy=rvq_policy`: Pi0.5's backbone (SigLIP, Gemma VLM, action expert) with the flow
    heads replaced by a code head that predicts an RVQ tokenizer's codes layer by layer
    (:mod:`vlaexp.policies.rvq`); the frozen tokenizer decodes them into actions.

    ``action_tokenizer``: the ``tokenizer_fit`` stage's ``tokenizer.pt`` or a run dir holding
    ``tokenizer/tokenizer.pt`` (a run that fits the tokenizer before `train` fills it in);
    ``rvq``: the run's `tokenizer` group (``${tokenizer}``), which that checkpoint must match;
    ``decoding``: ``dense`` (every layer), ``coarse`` (the first ``draft_layers``) or
    ``adaptive`` (draft, then refine where ``rvq.monitor`` says so); ``code_decoding``: each
    layer's most likely code (``argmax``) or its expected codebook vector under the predicted
    distribution (``expected``: uncertain layers hedge toward the codebook's mean);
    ``backbone``: a Pi0.5 checkpoint (ours or LeRobot's layout) whose vision tower, VLM and
    expert start the backbone (its flow-matching heads are left out); freeze it with
    ``train_expert_only`` / ``freeze_vision_encoder`` or LoRA as for Pi0.5."""

    type: str = "rvq_policy"
    action_tokenizer: Any = None
    rvq: Any = None
    decoding: str = "adaptive"
    code_decoding: str = "argmax"
    draft_layers: int = 2
    backbone: Any = None
