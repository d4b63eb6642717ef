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

# A batch without padding, its mask given as causal blocks (``block_ends``), attends block by
# block without a mask: each block's queries against the keys before its end. SDPA without
# a mask runs cuDNN's kernel at 3.6x (forward) / 1.6x (backward) the speed of the same kernel
# reading a dense additive bias (benchmarks/bench_attention.py, experiments/pi0_speed run H).
# False = always the dense mask (the benchmark's A/B).
UNMASKED_BLOCKS = True


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
    mask: torch.Tensor | None,
    rope: tuple[torch.Tensor, torch.Tensor],
    past: tuple[torch.Tensor, torch.Tensor] | None,
    impl: str,
    fused: list[FusedWeights | None] | None = None,
    block_ends: tuple[int, ...] | None = None,
) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor]:
    """One joint layer. ``rope``: cos/sin tables of all new tokens; ``mask``: additive rows
    of the queried streams, or None with ``block_ends`` (no padding, no cache: the queried
    rows are a tail of whole blocks, each attending to the keys before its end without a
    mask); ``fused``: per stream, its stacked projections or None.
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
    q_start = k.shape[2] - sum(q.shape[2] for q in qs)
    if block_ends is None:
        q = torch.cat(qs, dim=2)
        if len(qs) < len(layers):  # RoPE tables of the queried streams only
            cos = torch.cat([cos[:, :, s] for s in q_slices], dim=2)
            sin = torch.cat([sin[:, :, s] for s in q_slices], dim=2)
        q = apply_rotary(q, cos, sin)
        pieces = [(q_start, k.shape[2], attention(q, k, v, mask, impl))]
    else:  # each stream's queries stay apart (no cache: rows are positions)
        rotated = [
            (s.start, s.stop, apply_rotary(q, cos[:, :, s], sin[:, :, s]))
            for q, s in zip(qs, q_slices, strict=True)
        ]
        pieces = attention_by_blocks(rotated, k, v, block_ends, impl)
    offset = q_start
    for i, (layer, x, cond, want_q) in enumerate(zip(layers, hidden, conds, queried, strict=True)):
        if not want_q:
            continue
        n = x.shape[1]
        y = layer.self_attn.o_proj(_rows(pieces, offset, offset + n))
        offset += n
        x = gated_residual(x, y.to(x.dtype), normed_gates[i])
        h, gate = layer.post_attention_layernorm(x, cond)
        fw = fused[i]
        m = layer.mlp(h) if fw is None else mlp_fused(layer.mlp, h, fw[1])
        out[i] = gated_residual(x, m.to(x.dtype), gate)
    return out, k, v


def attention_by_blocks(
    queries: list[tuple[int, int, torch.Tensor]],
    k: torch.Tensor,
    v: torch.Tensor,
    block_ends: tuple[int, ...],
    impl: str,
) -> list[tuple[int, int, torch.Tensor]]:
    """Block-causal attention without padding, one unmasked call per block.

    Args:
        queries: (first row, end, float[B, H, rows, D]) of consecutive query rows that end
            the sequence and start at a block boundary; a block inside one of them is a
            slice of it (Pi0: the prefix stream is one block, the suffix stream two).
        k, v: float[B, KVH, L, D].
        block_ends: ascending, the last one L; a query of block j attends to every key
            before ``block_ends[j]``.
    Returns:
        (first row, end, float[B, rows, H * D]) per queried block, in order.
    """
    q_start = queries[0][0]
    pieces, start = [], 0
    for end in block_ends:
        if start >= q_start:
            rows = _rows(queries, start, end, dim=2)
            pieces.append((start, end, attention(rows, k[:, :, :end], v[:, :, :end], None, impl)))
        start = end
    return pieces


def _rows(
    pieces: list[tuple[int, int, torch.Tensor]], start: int, end: int, dim: int = 1
) -> torch.Tensor:
    """Rows [start, end) along ``dim`` of a tensor given as (first row, end, tensor) pieces
    in order; rows within one piece are a view of it (no copy)."""
    parts = [
        t.narrow(dim, max(start, s) - s, min(end, e) - max(start, s))
        for s, e, t in pieces
        if s < end and e > start
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def joint_forward(
    streams: list[Stream],
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: KVCache | None = None,
    build_cache: bool = False,
    attention_impl: str = "sdpa",
    gradient_checkpointing: bool = False,
    block_ends: tuple[int, ...] | None = None,
) -> tuple[list[torch.Tensor | None], KVCache | None]:
    """Run the streams' stacks layer by layer through one attention.

    Args:
        streams: in sequence order (prefix first); their lengths sum to L.
        mask: bool[B, L, Lc + L], True where a query may attend to a key; the first Lc
            keys are the cache's.
        positions: long[B, L], RoPE positions of the streams' tokens.
        cache: keys/values of earlier tokens per layer (from ``build_cache``), or None.
        build_cache: return the keys/values of every layer (after RoPE).
        block_ends: only for a mask without padding (no cache): the ends of its causal
            blocks (ascending, the last one L), the mask being "a token of block j attends
            to every token before ``block_ends[j]``". The SDPA path then attends block by
            block without a mask (:data:`UNMASKED_BLOCKS`); ``mask`` is not read.
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
    unmasked = (
        block_ends is not None and UNMASKED_BLOCKS and cache is None and attention_impl == "sdpa"
    )
    if unmasked and block_ends[-1] != sum(lengths):
        raise ValueError(f"block ends {block_ends} must end at the length {sum(lengths)}")
    additive = None
    built: KVCache = []
    for i in range(depth):
        last = i == depth - 1
        queried = [s.output or not last for s in streams]
        # block by block when the queried rows are a tail of whole blocks
        first = queried.index(True) if any(queried) else len(queried)
        tail_start = sum(lengths[:first])
        blocks = (
            block_ends
            if unmasked and all(queried[first:]) and tail_start in (0, *block_ends)
            else None
        )
        if blocks is None and additive is None:
            additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
            additive = additive.masked_fill(~mask, MASK_VALUE)[:, None]
        rows = _query_rows(additive, lengths, queried) if blocks is None else None
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
                blocks,
                use_reentrant=False,
            )
        else:
            new, k, v = _layer(
                layers, hidden, conds, queried, rows, rope, past, attention_impl, fused, blocks
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
