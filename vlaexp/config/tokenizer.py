"""Settings of the action tokenizers: the dataclasses the tokenizers are built from and the
structured configs of the `tokenizer` group (the same fields plus the group's type/name), kept
free of torch so that composing a config imports nothing heavy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vlaexp.errors import ConfigError


@dataclass
class RVQSettings:
    """What an RVQ tokenizer is; a checkpoint of other settings is refused."""

    chunk_size: int = 10
    action_dim: int = 7
    latent_steps: int = 1  # latent vectors per chunk (codes per layer)
    latent_dim: int = 64
    hidden_dim: int = 256
    layers: int = 8
    codebook_size: int = 256
    decay: float = 0.99  # EMA of the codebooks (vector-quantize-pytorch's default is 0.8)
    kmeans_init: bool = True
    kmeans_iters: int = 10
    threshold_ema_dead_code: int = 2
    quantize_dropout: bool = True
    commitment_weight: float = 1.0
    # LayerNorm (no parameters) on the encoder's latent before the quantizer: its scale cannot
    # run away from the EMA codebooks (experiments/rvq_adaptive). False here, so that tokenizers
    # saved before the setting existed load as they were fit; new fits set it (below)
    latent_norm: bool = False

    def check(self) -> None:
        for name in ("chunk_size", "action_dim", "latent_steps", "latent_dim", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tokenizer.{name}={getattr(self, name)} must be >= 1")
        if self.codebook_size < 2:
            raise ConfigError(f"tokenizer.codebook_size={self.codebook_size} must be >= 2")
        if self.layers < 2 and self.quantize_dropout:
            raise ConfigError("quantizer dropout keeps layers 1-2: it needs tokenizer.layers >= 2")

    @property
    def bits_per_layer(self) -> float:
        """Bits one layer spends on a chunk: latent_steps codes of log2(codebook_size)."""
        return self.latent_steps * math.log2(self.codebook_size)


@dataclass
class DCTSettings:
    chunk_size: int = 10
    action_dim: int = 7
    keep: int = 4  # low-frequency coefficients kept per dimension
    bits_per_coef: int = 4  # integers in [-(2^(b-1) - 1), 2^(b-1) - 1]
    scale: float = 0.0  # coefficient per integer step; 0 = sqrt(chunk_size) / levels

    def check(self) -> None:
        if not 1 <= self.keep <= self.chunk_size:
            raise ConfigError(f"tokenizer.keep={self.keep} must be in 1..chunk_size")
        if self.bits_per_coef < 2:
            raise ConfigError(f"tokenizer.bits_per_coef={self.bits_per_coef} must be >= 2")

    @property
    def levels(self) -> int:
        return 2 ** (self.bits_per_coef - 1) - 1

    @property
    def step(self) -> float:
        # |x| <= 1 per step bounds an orthonormal DCT coefficient by sqrt(T)
        return self.scale or math.sqrt(self.chunk_size) / self.levels

    @property
    def bits(self) -> int:
        return self.keep * self.action_dim * self.bits_per_coef


@dataclass
class MonitorConfig:
    """When adaptive decoding refines a 2-layer draft to every layer
    (:mod:`vlaexp.tokenizers.adaptive`). ``kind``: ``entropy`` (mean entropy, in nats, of the
    draft layers' code distributions above ``threshold``), ``action_variance`` (variance of
    the last ``window`` executed actions above ``threshold``) or ``gripper_distance`` (the
    gripper within ``threshold`` metres of the object; positions are the first 3 values of
    the observation keys ``gripper_key`` and ``object_key``)."""

    kind: str = "entropy"
    threshold: float = 2.0
    window: int = 5
    gripper_key: str = "observation.state"
    object_key: str = "observation.object_position"


@dataclass
class RVQTokenizerConfig(RVQSettings):
    """`tokenizer=rvq`: the RVQ settings, the tokenizer_fit stage's Adam rate, steps and
    batch size, and the monitor of adaptive decoding."""

    type: str = "rvq"
    name: str = "rvq"
    latent_norm: bool = True  # new tokenizers: the fit that does not diverge
    lr: float = 1.0e-3
    lr_schedule: str = "constant"  # constant | cosine (to zero over fit_steps)
    fit_steps: int = 3000  # Adam steps of the tokenizer_fit stage (not trainer.max_steps)
    fit_batch_size: int = 256  # chunks per step
    # std (normalized units) of Gaussian noise on the encoder's input chunks during the fit,
    # the target staying clean: a denoising fit, for codes that survive small chunk errors
    # (experiments/rvq_adaptive: sigma 0.005 already changed a third of layer 2's codes)
    fit_input_noise: float = 0.0
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


@dataclass
class DCTTokenizerConfig(DCTSettings):
    """`tokenizer=dct`: the FAST-style DCT baseline."""

    type: str = "dct"
    name: str = "dct"


GROUP_ONLY = (
    "type",
    "name",
    "lr",
    "lr_schedule",
    "fit_steps",
    "fit_batch_size",
    "fit_input_noise",
    "monitor",
)  # config fields that are not tokenizer settings


@dataclass
class RVQCompareConfig:
    """The ``rvq_compare`` stage: the trained RVQ policy evaluated in closed loop once per
    decoding in ``modes`` on the same evaluation seeds (``eval.*`` settings), and, with
    ``flow_policy`` (a Pi0.5 ``pretrained_model`` dir or run dir), the flow-matching policy on
    them too. Both act in the one mode ``cuda_graphs`` sets (replayed CUDA graphs on a GPU,
    else eager), neither compiled, so their latencies compare like for like."""

    modes: list[str] = field(default_factory=lambda: ["dense", "coarse", "adaptive"])
    flow_policy: Any = None
    cuda_graphs: bool = True
    # more adaptive rows, one per monitor threshold (tokenizer.monitor's kind), after `modes`
    thresholds: list[float] = field(default_factory=list)
    # more adaptive rows after those, one per monitor of any kind: each entry's fields (e.g.
    # {kind: gripper_distance, threshold: 0.05}) over tokenizer.monitor's, labelled
    # adaptive_<kind>_<threshold>
    monitors: list[dict[str, Any]] = field(default_factory=list)
    # more rows after those: each of these decodings again with policy.code_decoding=expected
    # (each layer's expected codebook vector, not its most likely code), labelled <mode>_expected
    expected_modes: list[str] = field(default_factory=list)
