"""Held-out analysis of an action tokenizer: error per depth, per dimension, gripper sign,
and how the codebooks are used (usage, perplexity, dead codes per layer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlaexp.tokenizers.rvq import RVQTokenizer


def code_usage(codes: torch.Tensor, codebook_size: int) -> list[dict[str, float]]:
    """Per layer of long[B, L, T']: share of codes used, perplexity (exp of the entropy of
    the code histogram: = codebook_size when uniform) and dead codes (never chosen)."""
    rows = []
    for layer in range(codes.shape[1]):
        counts = torch.bincount(codes[:, layer].flatten(), minlength=codebook_size).float()
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        dead = int((counts == 0).sum())
        rows.append(
            {
                "layer": layer + 1,
                "used": 1.0 - dead / codebook_size,
                "perplexity": float(np.exp(entropy)),
                "dead_codes": dead,
            }
        )
    return rows


@torch.no_grad()
def depth_errors(
    tok: RVQTokenizer, chunks: torch.Tensor, gripper_dim: int | None = -1
) -> list[dict[str, Any]]:
    """Per depth k = 1..L on held-out chunks float[B, T, A] (normalized): MSE, MSE divided by
    each dimension's variance (averaged), per-dimension MSE and, for ``gripper_dim``, the share
    of steps whose sign (open/close) the reconstruction gets right."""
    codes = tok.encode(chunks)
    var = chunks.reshape(-1, chunks.shape[-1]).var(dim=0).clamp_min(1e-12)
    rows = []
    for k in range(1, tok.settings.layers + 1):
        recon = tok.decode(codes, n_layers=k)
        per_dim = ((recon - chunks) ** 2).reshape(-1, chunks.shape[-1]).mean(dim=0)
        row = {
            "layers": k,
            "bits": k * tok.settings.bits_per_layer,
            "mse": float(per_dim.mean()),
            "nmse": float((per_dim / var).mean()),
            "mse_per_dim": [float(x) for x in per_dim],
        }
        if gripper_dim is not None:
            g = chunks[..., gripper_dim]
            row["gripper_sign_acc"] = float(
                (torch.sign(recon[..., gripper_dim]) == torch.sign(g)).float().mean()
            )
        rows.append(row)
    return rows
