"""Gemma decoder layers as Pi0 uses them: RMSNorm (or adaptive RMSNorm), GQA projections,
transformers' GemmaMLP, and rotary position embeddings.

The layers hold parameters only; :mod:`vlaexp.policies.pi0.joint` runs them, because Pi0
runs two stacks (the VLM and the action expert) layer by layer through one attention,
which no library's decoder layer can do. Parameter names follow transformers' Gemma
(``self_attn.q_proj``, ``mlp.gate_proj``, ``input_layernorm.weight``) so the published
checkpoints map onto them one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GemmaConfig
from transformers.models.gemma.modeling_gemma import GemmaMLP

from vlaexp.config.policy import GemmaStackConfig

# openpi's mask value: large and finite, so a fully masked row (a padding query) softmaxes
# to a uniform row instead of NaN, and its gradients stay finite.
MASK_VALUE = -2.3819763e38
ROPE_THETA = 10_000.0


class AdaptiveRMSNorm(nn.Module):
    """Gemma's RMSNorm, ``x / rms(x) * (1 + weight)`` computed in float32.

    With ``cond_dim`` it is Pi0.5's adaptive RMSNorm instead: ``dense(cond)`` gives
    (scale, shift, gate); the output is ``x / rms(x) * (1 + scale) + shift`` and ``gate``
    multiplies the residual branch that follows (see :func:`gated_residual`). The
    checkpoint names are ``.weight`` for the plain form and ``.dense.{weight,bias}`` for the
    adaptive one.
    """

    def __init__(self, dim: int, cond_dim: int | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.cond_dim = cond_dim
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)
            nn.init.zeros_(self.dense.weight)  # starts as the identity modulation

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: float[B, L, dim]; cond: float[B, cond_dim] (adaptive form only).

        Returns (normalized x in x's dtype, gate float[B, 1, dim] or None).
        """
        var = x.float().pow(2).mean(-1, keepdim=True)
        normed = x * torch.rsqrt(var + self.eps)  # float32 (x is promoted)
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).to(x.dtype), None
        if cond is None:
            raise ValueError("adaptive RMSNorm needs a condition (the flow-time embedding)")
        scale, shift, gate = self.dense(cond)[:, None, :].chunk(3, dim=-1)
        normed = normed * (1.0 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``x + y`` or, after an adaptive norm, ``x + y * gate``."""
    return x + y if gate is None else x + y * gate


class GemmaAttentionProjections(nn.Module):
    """q/k/v/o projections of one Gemma layer (grouped-query: ``num_kv_heads`` key heads)."""

    def __init__(self, cfg: GemmaStackConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        )
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)

    def heads(self, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """float[B, L, width] -> float[B, heads, L, head_dim]."""
        return self.split_heads(proj(x))

    def split_heads(self, y: torch.Tensor) -> torch.Tensor:
        b, n, _ = y.shape
        return y.view(b, n, -1, self.head_dim).transpose(1, 2)

    def qkv_fused(
        self, x: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v from one GEMM with the stacked weight of :func:`fused_weights`."""
        q, k, v = F.linear(x, weight).split(
            [d * self.head_dim for d in (self.num_heads, self.num_kv_heads, self.num_kv_heads)],
            dim=-1,
        )
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)


class GemmaLayer(nn.Module):
    """Parameters of one decoder layer: norms, attention projections, MLP."""

    def __init__(self, cfg: GemmaStackConfig, cond_dim: int | None = None) -> None:
        super().__init__()
        self.input_layernorm = AdaptiveRMSNorm(cfg.width, cond_dim)
        self.self_attn = GemmaAttentionProjections(cfg)
        self.post_attention_layernorm = AdaptiveRMSNorm(cfg.width, cond_dim)
        self.mlp = GemmaMLP(
            GemmaConfig(
                hidden_size=cfg.width,
                intermediate_size=cfg.mlp_dim,
                hidden_act="gelu_pytorch_tanh",
                hidden_activation="gelu_pytorch_tanh",
            )
        )


FusedWeights = tuple[torch.Tensor, torch.Tensor]  # per layer: [q; k; v] and [gate; up]


def fused_weights(stack: GemmaStack) -> list[FusedWeights] | None:
    """Per layer, the q/k/v projection weights stacked into one matrix and the MLP's gate/up
    into another, so that a small-batch pass (a denoising step: 51 tokens) runs two GEMMs
    where it ran five. Concatenated on every call, so they follow in-place weight updates;
    None where the projections are not plain ``nn.Linear`` (LoRA adapters wrap them)."""
    plain = all(
        type(m) is nn.Linear and m.bias is None
        for layer in stack.layers
        for m in (
            layer.self_attn.q_proj,
            layer.self_attn.k_proj,
            layer.self_attn.v_proj,
            layer.mlp.gate_proj,
            layer.mlp.up_proj,
        )
    )
    if not plain:
        return None
    out = []
    for layer in stack.layers:
        a, mlp = layer.self_attn, layer.mlp
        qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        out.append((qkv, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])))
    return out


def mlp_fused(mlp: GemmaMLP, x: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """``mlp(x)`` with its gate and up projections as one GEMM (:func:`fused_weights`)."""
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return mlp.down_proj(mlp.act_fn(gate) * up)


class GemmaStack(nn.Module):
    """``depth`` layers and the final norm (adaptive when ``cond_dim`` is given)."""

    def __init__(self, cfg: GemmaStackConfig, cond_dim: int | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.layers = nn.ModuleList(GemmaLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = AdaptiveRMSNorm(cfg.width, cond_dim)


def rotary_tables(
    positions: torch.Tensor, head_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos/sin float[B, 1, L, head_dim] for integer positions long[B, L].

    Computed in float32, then cast to the activations' dtype, as transformers' Gemma does.
    """
    return _rotary_tables_op(positions, head_dim, dtype)


def rotary_tables_inline(
    positions: torch.Tensor, head_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotary_tables` as aten ops, which torch.compile traces through (see below)."""
    inv_freq = 1.0 / (
        ROPE_THETA
        ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


# An opaque op (not a composite of aten ops) so that torch.compile computes the tables once per
# forward: traced through, inductor inlined the sin/cos into every layer's RoPE kernel,
# forward and backward (full-size Pi0 training step on an H100: ~8 ms of its ~510 ms of kernel
# time, 0.6-1.6% of the step; experiments/pi0_speed run G). Positions are integers: no gradient.
_rotary_tables_op = torch.library.custom_op(
    "vlaexp::rotary_tables", rotary_tables_inline, mutates_args=()
)


@_rotary_tables_op.register_fake
def _(positions: torch.Tensor, head_dim: int, dtype: torch.dtype):
    shape = (positions.shape[0], 1, positions.shape[1], head_dim)
    return positions.new_empty(shape, dtype=dtype), positions.new_empty(shape, dtype=dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate float[B, H, L, D] by the tables of :func:`rotary_tables`."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# SDPA kernels allowed without gradients (sampling). PyTorch's default order picks cuDNN's
# fused attention for Pi0's masked batch-1 calls, and on an H200 that kernel took ~65 us per
# call: 12.9 ms of a chunk's 27 ms of kernel time (experiments/pi0_speed). None = the default.
INFERENCE_SDPA_BACKENDS: list[SDPBackend] | None = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
# SDPA kernels allowed with gradients (training); None = PyTorch's default choice.
TRAINING_SDPA_BACKENDS: list[SDPBackend] | None = None
# Without a mask, SDPA gets the key heads as they are (enable_gqa) rather than expanded to
# every query head (benchmarks/bench_attention.py times both).
GQA_WITHOUT_MASK = True


def expand_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """float[B, KVH, L, D] -> float[B, heads, L, D], each key head shared by heads / KVH
    query heads. With one key head (Pi0's Gemmas) this is a stride-0 view: no copy per layer
    and denoising step, and autograd keeps the small tensor, not eight copies of it."""
    kvh = x.shape[1]
    if kvh == heads:
        return x
    if kvh == 1:
        return x.expand(x.shape[0], heads, x.shape[2], x.shape[3])
    return x.repeat_interleave(heads // kvh, dim=1)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, impl: str
) -> torch.Tensor:
    """Grouped-query attention.

    Args:
        q: float[B, H, Lq, D]; k, v: float[B, KVH, Lk, D].
        mask: additive float[B, 1, Lq, Lk] (0 where allowed, :data:`MASK_VALUE` elsewhere),
            or None: every query attends to every key.
        impl: ``sdpa`` (PyTorch's fused kernels) or ``eager`` (the reference's arithmetic:
            float32 softmax over explicitly repeated key heads).
    Returns:
        float[B, Lq, H * D].
    """
    b, h, lq, d = q.shape
    mask = mask.to(q.dtype) if mask is not None else None
    # Key heads repeated for every query head: SDPA's memory-efficient kernel, the one that
    # takes an arbitrary mask, does not accept grouped heads (enable_gqa). Without a mask
    # (GQA_WITHOUT_MASK) the kernels take the key heads as they are.
    gqa = impl == "sdpa" and mask is None and GQA_WITHOUT_MASK and k.shape[1] != h
    if not gqa:
        k, v = expand_heads(k, h), expand_heads(v, h)
    if impl == "sdpa":
        backends = TRAINING_SDPA_BACKENDS if torch.is_grad_enabled() else INFERENCE_SDPA_BACKENDS
        if backends is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        else:
            with sdpa_kernel(backends):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    elif impl == "eager":
        scores = torch.matmul(q, k.transpose(2, 3)) * d**-0.5
        scores = scores + mask if mask is not None else scores
        out = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype), v)
    else:
        raise ValueError(f"policy.attention must be 'sdpa' or 'eager', got '{impl}'")
    return out.transpose(1, 2).reshape(b, lq, h * d)
