"""Flow matching and attention-mask arithmetic of Pi0 (openpi's definitions).

Flow convention (time runs from data at t=0 to noise at t=1)::

    x_t = t * noise + (1 - t) * actions        target velocity u = noise - actions

Sampling integrates ``dx/dt = v(x_t, t)`` with Euler steps from t=1 (noise) to t=0.
"""

from __future__ import annotations

import math

import torch


def sample_time(
    batch_size: int,
    alpha: float,
    beta: float,
    scale: float,
    offset: float,
    device: torch.device,
) -> torch.Tensor:
    """float[B]: ``Beta(alpha, beta) * scale + offset`` (openpi: Beta(1.5, 1) * 0.999 + 0.001),
    which puts more training weight near t=1, the noisy end. Drawn on the CPU (Beta sampling
    is not implemented on every device) from torch's global generator."""
    dist = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta)))
    return (dist.sample((batch_size,)) * scale + offset).to(device=device, dtype=torch.float32)


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding float[B, dim] of scalar times float[B].

    Periods are spaced geometrically from ``min_period`` to ``max_period``; computed in
    float64 (float32 on devices without it) and returned in ``t``'s dtype.
    """
    if dim % 2:
        raise ValueError(f"time embedding width must be even, got {dim}")
    if t.ndim != 1:
        raise ValueError(f"expected times float[B], got shape {list(t.shape)}")
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * t[:, None].to(dtype)
    return torch.cat([angle.sin(), angle.cos()], dim=1).to(t.dtype)


def attention_mask_2d(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """bool[B, L, L]: which token may attend to which (big_vision's prefix-LM scheme).

    Args:
        pad: bool[B, L], False for padding (never attended to, attends to nothing).
        blocks: int/bool[B, L], 1 where a new causal block starts. A token attends to
            every valid token whose block index (cumulative sum) is at most its own:
            all zeros is full bidirectional attention, all ones is causal.
    """
    cum = torch.cumsum(blocks.long(), dim=1)
    causal = cum[:, None, :] <= cum[:, :, None]
    return causal & pad[:, None, :] & pad[:, :, None]


def positions_from_pad(pad: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """long[B, L] RoPE positions: the count of valid tokens before each token, + ``offset``."""
    offset = offset if isinstance(offset, int) else offset[:, None]
    return torch.cumsum(pad.long(), dim=1) - 1 + offset


def euler_times(num_steps: int) -> tuple[list[float], float]:
    """The Euler integration's start times 1, 1 + dt, ..., -dt and its step dt = -1/n
    (computed as openpi does, so the float32 times are bit-identical)."""
    if num_steps < 1:
        raise ValueError(f"policy.num_inference_steps must be >= 1, got {num_steps}")
    dt = -1.0 / num_steps
    return [1.0 + i * dt for i in range(num_steps)], dt
