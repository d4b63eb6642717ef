"""One attention over two Gemma stacks: Pi0's VLM (prefix: images + text) and its action
expert (suffix: state + noisy actions), layer by layer.

At every layer each stream is normalized and projected by its own stack's weights, the
queries/keys/values of all streams are concatenated along the sequence and attend
together under one mask, and each stream's slice of the result goes through its own
output projection and MLP. No library decoder does this (openpi and LeRobot write it by
hand too), hence this module.

Three uses (see :class:`~vlaexp.policies.pi0.model.Pi0Model`):

- training: prefix and suffix together;
- inference, once per chunk: the prefix alone, returning its keys/values per layer
  (the KV cache);
- inference, once per denoising step: the suffix alone, attending to the cache.

The prefix's output after the last layer is never used (only its keys/values are), so the
last layer skips the prefix's query, attention output, output projection and MLP unless
``prefix_output=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from vlaexp.policies.pi0.gemma import (
    MASK_VALUE,
    FusedWeights,
    GemmaLayer,
    GemmaStack,
    apply_rotary,
    attention,
    gated_residual,
    mlp_fused,
    rotary_tables,
)

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: k, v float[B, KVH, L, D]


@dataclass
class Stream:
    """One stream's input to :func:`joint_forward`."""

    stack: GemmaStack
    hidden: torch.Tensor  # float[B, L, width]
    cond: torch.Tensor | None = None  # adaptive-norm condition float[B, cond_dim]
    output: bool = True  # whether its output after the last layer is needed
    fused: list[FusedWeights] | None = None  # stacked projections per layer (fused_weights)


def check_compatible(a: GemmaStack, b: GemmaStack) -> None:
    """Joint attention needs equal depth, heads, key heads and head size in both stacks."""
    for name in ("depth", "num_heads", "num_kv_heads", "head_dim"):
        va, vb = getattr(a.config, name), getattr(b.config, name)
        if va != vb:
            raise ValueError(
                f"policy.vlm.{name}={va} but policy.expert.{name}={vb}: they must match"
            )


def _layer(
    layers: list[GemmaLayer],
    hidden: list[torch.Tensor],
    conds: list[torch.Tensor | None],
    queried: list[bool],
    mask: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    past: tuple[torch.Tensor, torch.Tensor] | None,
    impl: str,
    fused: list[FusedWeights | None] | None = None,
) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor]:
    """One joint layer. ``rope``: cos/sin tables of all new tokens; ``mask``: additive rows
    of the queried streams; ``fused``: per stream, its stacked projections or None.
    Returns (new hidden per stream, None where not queried; k; v)."""
    fused = fused or [None] * len(layers)
    qs, ks, vs, normed_gates, q_slices = [], [], [], [], []
    start = 0
    for layer, x, cond, want_q, fw in zip(layers, hidden, conds, queried, fused, strict=True):
        h, gate = layer.input_layernorm(x, cond)
        attn = layer.self_attn
        if fw is not None and want_q:
            q, k, v = attn.qkv_fused(h, fw[0])
            ks.append(k)
            vs.append(v)
        else:
            ks.append(attn.heads(attn.k_proj, h))
            vs.append(attn.heads(attn.v_proj, h))
            q = attn.heads(attn.q_proj, h) if want_q else None
        if want_q:
            qs.append(q)
            q_slices.append(slice(start, start + x.shape[1]))
        normed_gates.append(gate)
        start += x.shape[1]
    k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
    cos, sin = rope
    k = apply_rotary(k, cos, sin)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    out: list[torch.Tensor | None] = [None] * len(layers)
    if not qs:
        return out, k, v
    q = torch.cat(qs, dim=2)
    if len(qs) < len(layers):  # RoPE tables of the queried streams only
        cos = torch.cat([cos[:, :, s] for s in q_slices], dim=2)
        sin = torch.cat([sin[:, :, s] for s in q_slices], dim=2)
    q = apply_rotary(q, cos, sin)
    att = attention(q, k, v, mask, impl)
    offset = 0
    for i, (layer, x, cond, want_q) in enumerate(zip(layers, hidden, conds, queried, strict=True)):
        if not want_q:
            continue
        n = x.shape[1]
        y = layer.self_attn.o_proj(att[:, offset : offset + n])
        offset += n
        x = gated_residual(x, y.to(x.dtype), normed_gates[i])
        h, gate = layer.post_attention_layernorm(x, cond)
        fw = fused[i]
        m = layer.mlp(h) if fw is None else mlp_fused(layer.mlp, h, fw[1])
        out[i] = gated_residual(x, m.to(x.dtype), gate)
    return out, k, v


def joint_forward(
    streams: list[Stream],
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: KVCache | None = None,
    build_cache: bool = False,
    attention_impl: str = "sdpa",
    gradient_checkpointing: bool = False,
) -> tuple[list[torch.Tensor | None], KVCache | None]:
    """Run the streams' stacks layer by layer through one attention.

    Args:
        streams: in sequence order (prefix first); their lengths sum to L.
        mask: bool[B, L, Lc + L], True where a query may attend to a key; the first Lc
            keys are the cache's.
        positions: long[B, L], RoPE positions of the streams' tokens.
        cache: keys/values of earlier tokens per layer (from ``build_cache``), or None.
        build_cache: return the keys/values of every layer (after RoPE).
    Returns:
        (final-normed output per stream, None for streams with ``output=False``; the cache
        built, or None).
    """
    depth = streams[0].stack.config.depth
    hidden = [s.hidden for s in streams]
    conds = [s.cond for s in streams]
    lengths = [h.shape[1] for h in hidden]
    # RoPE tables and the additive mask once for all layers, in the projections' dtype
    dtype = _activation_dtype(streams)
    rope = rotary_tables(positions, streams[0].stack.config.head_dim, dtype)
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    additive = additive.masked_fill(~mask, MASK_VALUE)[:, None]
    built: KVCache = []
    for i in range(depth):
        last = i == depth - 1
        queried = [s.output or not last for s in streams]
        rows = _query_rows(additive, lengths, queried)
        layers = [s.stack.layers[i] for s in streams]
        fused = [s.fused[i] if s.fused is not None else None for s in streams]
        past = cache[i] if cache is not None else None
        if gradient_checkpointing and torch.is_grad_enabled():
            new, k, v = checkpoint(
                _layer,
                layers,
                hidden,
                conds,
                queried,
                rows,
                rope,
                past,
                attention_impl,
                fused,
                use_reentrant=False,
            )
        else:
            new, k, v = _layer(
                layers, hidden, conds, queried, rows, rope, past, attention_impl, fused
            )
        if build_cache:
            built.append((k, v))
        hidden = [n if n is not None else h for n, h in zip(new, hidden, strict=True)]
    outputs: list[torch.Tensor | None] = []
    for s, h in zip(streams, hidden, strict=True):
        outputs.append(s.stack.norm(h, s.cond)[0] if s.output else None)
    return outputs, (built if build_cache else None)


def _activation_dtype(streams: list[Stream]) -> torch.dtype:
    """The dtype the Q/K/V projections produce: autocast's, else the weights'."""
    device = streams[0].hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return streams[0].stack.layers[0].self_attn.q_proj.weight.dtype


def _query_rows(additive: torch.Tensor, lengths: list[int], queried: list[bool]) -> torch.Tensor:
    """The mask rows of the queried streams (all rows when every stream is queried)."""
    if all(queried):
        return additive
    if not any(queried):  # the last layer of a prefix-only pass computes keys/values only
        return additive[:, :, :0]
    parts, start = [], 0
    for n, q in zip(lengths, queried, strict=True):
        if q:
            parts.append(additive[:, :, start : start + n])
        start += n
    return torch.cat(parts, dim=2)
