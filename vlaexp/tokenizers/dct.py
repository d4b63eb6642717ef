"""FAST-style DCT action tokenizer: the RVQ tokenizer's baseline at matched bits.

Each action dimension of a chunk (normalized to [-1, 1]) goes through an orthonormal DCT-II
over time; the first ``keep`` coefficients (the slow part of the motion) are scaled and
rounded to integers in ``[-levels, levels]``; the rest are dropped. Tokens are those integers,
dimension by dimension. A chunk costs ``keep * action_dim * bits_per_coef`` bits, which is how
it is matched against RVQ's ``8 * layers`` bits. FAST further compresses the integers with
BPE; at matched *bits* that changes nothing here, so it is left out.

Decoding checks the tokens: a sequence of the wrong length or with values outside the
quantizer's range raises :class:`DecodeError` (and :meth:`DCTTokenizer.decode_batch` reports
each failure), never a silently zeroed chunk.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from scipy.fft import dct, idct

from vlaexp.config.tokenizer import DCTSettings
from vlaexp.errors import VlaexpError


class DecodeError(VlaexpError):
    """A token sequence that is not a DCT chunk of this tokenizer."""


class DCTTokenizer:
    """``encode(actions[B, T, A]) -> int tokens [B, A * keep]``; ``decode(tokens)``."""

    def __init__(self, settings: DCTSettings | dict[str, Any] | None = None) -> None:
        s = settings if isinstance(settings, DCTSettings) else DCTSettings(**(settings or {}))
        s.check()
        self.settings = s

    def encode(self, actions: np.ndarray) -> np.ndarray:
        s = self.settings
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 3 or a.shape[1:] != (s.chunk_size, s.action_dim):
            raise ValueError(
                f"actions must be [B, {s.chunk_size}, {s.action_dim}], got {list(a.shape)}"
            )
        coefs = dct(a, type=2, norm="ortho", axis=1)[:, : s.keep]  # [B, keep, A]
        q = np.clip(np.round(coefs / s.step), -s.levels, s.levels).astype(np.int64)
        return q.transpose(0, 2, 1).reshape(a.shape[0], -1)  # dimension by dimension

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """int[B, A * keep] -> float[B, T, A]; :class:`DecodeError` on a malformed sequence."""
        s = self.settings
        t = np.asarray(tokens)
        if t.ndim != 2 or t.shape[1] != s.action_dim * s.keep:
            raise DecodeError(
                f"DCT tokens must be [B, {s.action_dim * s.keep}] ({s.action_dim} dims x "
                f"{s.keep} coefficients), got {list(t.shape)}"
            )
        if not np.issubdtype(t.dtype, np.integer) or np.abs(t).max(initial=0) > s.levels:
            raise DecodeError(
                f"DCT tokens must be integers in [-{s.levels}, {s.levels}]; "
                f"got {t.dtype} in [{t.min(initial=0)}, {t.max(initial=0)}]"
            )
        coefs = np.zeros((t.shape[0], s.chunk_size, s.action_dim))
        coefs[:, : s.keep] = t.reshape(t.shape[0], s.action_dim, s.keep).transpose(0, 2, 1) * s.step
        return idct(coefs, type=2, norm="ortho", axis=1)

    def decode_batch(self, sequences: list[Any]) -> tuple[np.ndarray, list[int], list[str]]:
        """Decode sequences one by one: (chunks of the good ones, their indices, one message
        per failure), so a caller can count decode failures instead of getting zeros."""
        good, ok, errors = [], [], []
        for i, seq in enumerate(sequences):
            try:
                good.append(self.decode(np.asarray(seq)[None])[0])
                ok.append(i)
            except DecodeError as e:
                errors.append(f"sequence {i}: {e}")
        s = self.settings
        chunks = np.stack(good) if good else np.zeros((0, s.chunk_size, s.action_dim))
        return chunks, ok, errors

    def config_dict(self) -> dict[str, Any]:
        return {"type": "dct", **asdict(self.settings)}


def dct_curve(
    fit_chunks: np.ndarray, test_chunks: np.ndarray, budgets: list[int]
) -> list[dict[str, Any]]:
    """The DCT baseline's best held-out MSE at each bit budget: for every (keep, bits per
    coefficient) that fits the budget, the setting with the lowest MSE on ``fit_chunks`` is
    chosen and measured on ``test_chunks``."""
    _, t, a = fit_chunks.shape
    rows = []
    for budget in budgets:
        best = None
        for keep in range(1, t + 1):
            for b in range(2, 17):
                s = DCTSettings(chunk_size=t, action_dim=a, keep=keep, bits_per_coef=b)
                if s.bits > budget:
                    continue
                tok = DCTTokenizer(s)
                fit_mse = float(np.mean((tok.decode(tok.encode(fit_chunks)) - fit_chunks) ** 2))
                if best is None or fit_mse < best[0]:
                    best = (fit_mse, s)
        if best is None:
            rows.append({"bits": budget, "mse": float("nan"), "keep": 0, "bits_per_coef": 0})
            continue
        tok = DCTTokenizer(best[1])
        mse = float(np.mean((tok.decode(tok.encode(test_chunks)) - test_chunks) ** 2))
        rows.append(
            {
                "bits": budget,
                "mse": mse,
                "keep": best[1].keep,
                "bits_per_coef": best[1].bits_per_coef,
            }
        )
    return rows
