"""A comparison kept for benchmarks/bench_attention.py, not used by vlaexp: Pi0's block mask
with key padding, exactly, on FlashAttention-2's variable-length kernel.

The idea: reorder each sample's keys valid-first (attention does not depend on their order),
so "the valid keys before the end of block j" are the first m of them; make every
(sample, block) one varlen sequence against its own copy of those keys, and the copy's rest a
sequence of zero queries, so the kernel's key ranges stay contiguous and disjoint. The op
packs inside a custom op (autograd saves q, k, v, out, lse only) and runs the packing on CPU
over a loop of per-sequence attentions.

Measured on an H100 (experiments/pi0_speed, run H): exact (the same error against float32 as
cuDNN with the dense mask), but slower: 4.3-4.6 ms forward + backward per layer against 2.6 ms
for cuDNN reading the dense bias (FlashAttention-2's kernels at head dim 256 take 1.7 ms alone,
cuDNN's without a bias 1.1 ms), and the compiled training step went from 0.526 to 0.551 s.
vlaexp instead attends block by block without a mask when a batch has no padding
(``vlaexp.policies.pi0.joint.attention_by_blocks``).
"""

from __future__ import annotations

import torch


def _layout(
    pad: torch.Tensor, ends: list[int], q_start: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The varlen description of the blocks queried (those at or after ``q_start``).

    Returns (order long[B, L]: keys valid-first; counts long[B, J]: valid keys each block
    sees; cu_q, cu_k int32[2 * B * J + 1]; max_q)."""
    b, length = pad.shape
    starts = [0, *ends[:-1]]
    blocks = [(s, e) for s, e in zip(starts, ends, strict=True) if s >= q_start]
    if not blocks or blocks[0][0] != q_start or ends[-1] != length:
        raise ValueError(
            f"block ends {ends} must end at the sequence length {length} and the queried rows "
            f"must start at a block boundary (q_start={q_start})"
        )
    j = len(blocks)
    lq = length - q_start
    dev = pad.device
    # stable partition: valid keys first, each group in sequence order
    order = torch.argsort((~pad).to(torch.int8), dim=1, stable=True)
    valid_before = torch.cumsum(pad.long(), dim=1)  # [B, L]
    counts = valid_before[:, [e - 1 for _, e in blocks]]  # [B, J]
    rel_ends = torch.tensor([e - q_start for _, e in blocks], device=dev)
    q_end = torch.arange(b, device=dev)[:, None] * lq + rel_ends  # [B, J]
    copy = torch.arange(b * j, device=dev).view(b, j) * length  # each copy's first row
    cu_q = torch.stack([q_end, q_end], dim=-1).flatten()
    cu_k = torch.stack([copy + counts, copy + length], dim=-1).flatten()
    zero = torch.zeros(1, dtype=torch.int32, device=dev)
    cu_q = torch.cat([zero, cu_q.to(torch.int32)])
    cu_k = torch.cat([zero, cu_k.to(torch.int32)])
    return order, counts, cu_q, cu_k, max(e - s for s, e in blocks)


def _pack_keys(x: torch.Tensor, order: torch.Tensor, copies: int) -> torch.Tensor:
    """float[B, L, G, D] -> float[B * copies * L, G, D]: reordered, once per block."""
    b, length, g, d = x.shape
    x = x.gather(1, order[:, :, None, None].expand(b, length, g, d))
    return x[:, None].expand(b, copies, length, g, d).reshape(b * copies * length, g, d)


def _unpack_keys(
    dx: torch.Tensor, order: torch.Tensor, counts: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """The gradient of :func:`_pack_keys`, with each copy's rows past its block's keys
    (the zero-query sequences) dropped rather than trusted to be zero."""
    b, length, g, d = shape
    j = counts.shape[1]
    dx = dx.view(b, j, length, g, d)
    rows = torch.arange(length, device=dx.device)
    keep = rows[None, None, :] < counts[:, :, None]  # [B, J, L]
    acc = torch.promote_types(dx.dtype, torch.float32)
    dx = torch.where(keep[..., None, None], dx, 0).sum(1, dtype=acc).to(dx.dtype)
    out = torch.empty((b, length, g, d), dtype=dx.dtype, device=dx.device)
    return out.scatter_(1, order[:, :, None, None].expand(b, length, g, d), dx)


def _sequences(cu_q: torch.Tensor, cu_k: torch.Tensor):
    """(q range, k range) of every sequence with queries and keys (CPU path)."""
    cq, ck = cu_q.tolist(), cu_k.tolist()
    for i in range(len(cq) - 1):
        if cq[i + 1] > cq[i] and ck[i + 1] > ck[i]:
            yield slice(cq[i], cq[i + 1]), slice(ck[i], ck[i + 1])


def _expand(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.repeat_interleave(heads // x.shape[1], dim=1)


def _probs(q, k, v, scale):
    """One sequence in float32 (or wider): (scores, softmax [H, Lq, Lk], values [Lk, H, D])."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    h = q.shape[1]
    s = torch.einsum("qhd,khd->hqk", q.to(dtype), _expand(k, h).to(dtype)) * scale
    return s, torch.softmax(s, dim=-1), _expand(v, h).to(dtype)


def _varlen_forward(q, k, v, cu_q, cu_k, max_q, max_k, scale):
    """(out float[T, H, D], lse float32[H, T]) of the packed sequences."""
    if q.is_cuda:
        out, lse, *_ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_q, cu_k, max_q, max_k, 0.0, False, False, scale=scale
        )
        return out, lse
    out = torch.zeros_like(q)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32)
    for sq, sk in _sequences(cu_q, cu_k):
        s, p, vs = _probs(q[sq], k[sk], v[sk], scale)
        lse[:, sq] = torch.logsumexp(s, dim=-1).float()
        out[sq] = torch.einsum("hqk,khd->qhd", p, vs).to(q.dtype)
    return out, lse


def _varlen_backward(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, scale):
    """(dq, dk, dv) of the packed sequences; dk/dv rows of zero-query sequences are left
    unspecified (:func:`_unpack_keys` drops them)."""
    if q.is_cuda:
        empty = torch.empty(0, device=q.device)
        return torch.ops.aten._flash_attention_backward(
            dout,
            q,
            k,
            v,
            out,
            lse,
            cu_q,
            cu_k,
            max_q,
            max_k,
            0.0,
            False,
            empty,
            empty,
            scale=scale,
        )
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    g = k.shape[1]
    for sq, sk in _sequences(cu_q, cu_k):
        _, p, vs = _probs(q[sq], k[sk], v[sk], scale)
        do = dout[sq].to(p.dtype)
        # softmax's backward by hand: autograd is off inside a custom op
        dp = torch.einsum("qhd,khd->hqk", do, vs)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
        ks = _expand(k[sk], q.shape[1]).to(p.dtype)
        dq[sq] = torch.einsum("hqk,khd->qhd", ds, ks).to(q.dtype)
        per_head_k = torch.einsum("hqk,qhd->khd", ds, q[sq].to(p.dtype))
        per_head_v = torch.einsum("hqk,qhd->khd", p, do)
        dk[sk] = per_head_k.unflatten(1, (g, -1)).sum(2).to(k.dtype)
        dv[sk] = per_head_v.unflatten(1, (g, -1)).sum(2).to(v.dtype)
    return dq, dk, dv


@torch.library.custom_op("vlaexp_bench::flash_varlen_blocks", mutates_args=())
def _block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pad: torch.Tensor,
    ends: list[int],
    q_start: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    b, lq, h, d = q.shape
    order, counts, cu_q, cu_k, max_q = _layout(pad, ends, q_start)
    j = counts.shape[1]
    out, lse = _varlen_forward(
        q.reshape(b * lq, h, d),
        _pack_keys(k, order, j),
        _pack_keys(v, order, j),
        cu_q,
        cu_k,
        max_q,
        k.shape[1],
        scale,
    )
    return out.view(b, lq, h, d), lse


@_block_attention.register_fake
def _(q, k, v, pad, ends, q_start, scale):
    b, lq, h, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((h, b * lq), dtype=torch.float32)


@torch.library.custom_op("vlaexp_bench::flash_varlen_blocks_backward", mutates_args=())
def _block_attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    pad: torch.Tensor,
    ends: list[int],
    q_start: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, lq, h, d = q.shape
    order, counts, cu_q, cu_k, max_q = _layout(pad, ends, q_start)
    j = counts.shape[1]
    dq, dk, dv = _varlen_backward(
        dout.reshape(b * lq, h, d).contiguous(),
        q.reshape(b * lq, h, d),
        _pack_keys(k, order, j),
        _pack_keys(v, order, j),
        out.reshape(b * lq, h, d),
        lse,
        cu_q,
        cu_k,
        max_q,
        k.shape[1],
        scale,
    )
    return (
        dq.view(b, lq, h, d),
        _unpack_keys(dk, order, counts, k.shape),
        _unpack_keys(dv, order, counts, v.shape),
    )


@_block_attention_backward.register_fake
def _(dout, q, k, v, out, lse, pad, ends, q_start, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, pad, ends, q_start, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, pad)
    ctx.ends, ctx.q_start, ctx.scale = ends, q_start, scale


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse, pad = ctx.saved_tensors
    dq, dk, dv = _block_attention_backward(
        dout, q, k, v, out, lse, pad, ctx.ends, ctx.q_start, ctx.scale
    )
    return dq, dk, dv, None, None, None, None


_block_attention.register_autograd(_backward, setup_context=_setup_context)


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pad: torch.Tensor,
    ends: list[int],
    q_start: int = 0,
) -> torch.Tensor:
    """Attention of query rows [q_start, L) under the block mask of ``pad`` and ``ends``.

    Args:
        q: float[B, L - q_start, H, D], the queries of rows q_start.. (a block boundary).
        k, v: float[B, L, G, D], G key heads each shared by H / G query heads.
        pad: bool[B, L], False for padding tokens (never attended to).
        ends: the blocks' end positions, ascending, the last one L (static). A query in
            block j attends to the valid keys before ``ends[j]``.
        q_start: the first queried row.
    Returns:
        float[B, L - q_start, H, D]; rows of padding queries attend to their block's valid
        keys (the dense mask's rows for them are empty) and are meant to be ignored.
    """
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{q.shape[2]} query heads are not a multiple of {k.shape[2]} key heads")
    out, _ = _block_attention(
        q, k.contiguous(), v.contiguous(), pad, list(ends), q_start, q.shape[-1] ** -0.5
    )
    return out


def block_mask(pad: torch.Tensor, ends: list[int]) -> torch.Tensor:
    """bool[B, L, L]: the dense mask of :func:`block_attention` (padding rows included)."""
    length = pad.shape[1]
    pos = torch.arange(length, device=pad.device)
    bounds = torch.tensor(list(ends), device=pad.device)
    row_end = bounds[torch.searchsorted(bounds, pos, right=True)]  # each row's block end
    return (pos[None, :] < row_end[:, None])[None] & pad[:, None, :]
