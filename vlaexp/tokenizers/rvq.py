"""Residual-VQ action tokenizer: an action chunk -> codes of 8 layers x 256 -> an action chunk.

Actions (quantile-normalized to [-1, 1] by the caller) of one chunk, float[B, T, A], are
encoded to ``latent_steps`` latent vectors, quantized by a residual VQ (each layer codes what
the layers before it left), and decoded back. Layer 1 carries the coarse motion; each further
layer refines it, so decoding with the first ``k`` layers gives a usable chunk at 8k bits per
latent step. The quantizer is vector-quantize-pytorch's ``ResidualVQ`` behind a thin adapter
(:class:`RVQTokenizer`): EMA codebook updates (decay 0.99, set explicitly: the library's
default is 0.8), k-means initialization, dead-code replacement, and quantizer dropout that
always keeps the first two layers (``quantize_dropout_cutoff_index=1``).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlaexp.config.tokenizer import RVQSettings
from vlaexp.errors import ConfigError


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers of ``dims`` with GELU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class RVQTokenizer(nn.Module):
    """``encode(actions) -> codes`` long[B, layers, latent_steps]; ``decode(codes, n_layers)``.

    ``forward(actions)`` is the training pass: reconstruction (all layers, or a random depth
    >= 2 under quantizer dropout) and the commitment loss.
    """

    def __init__(self, settings: RVQSettings | dict[str, Any] | None = None) -> None:
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        s = settings if isinstance(settings, RVQSettings) else RVQSettings(**(settings or {}))
        s.check()
        self.settings = s
        flat = s.chunk_size * s.action_dim
        out = s.latent_steps * s.latent_dim
        self.encoder = _mlp([flat, s.hidden_dim, s.hidden_dim, out])
        self.decoder = _mlp([out, s.hidden_dim, s.hidden_dim, flat])
        self.rvq = ResidualVQ(
            dim=s.latent_dim,
            num_quantizers=s.layers,
            codebook_size=s.codebook_size,
            decay=s.decay,
            kmeans_init=s.kmeans_init,
            kmeans_iters=s.kmeans_iters,
            threshold_ema_dead_code=s.threshold_ema_dead_code,
            quantize_dropout=s.quantize_dropout,
            quantize_dropout_cutoff_index=1,  # dropout never removes layers 1-2
            commitment_weight=s.commitment_weight,
        )

    # ----------------------------------------------------------------------------- checks
    def _check_actions(self, actions: torch.Tensor) -> None:
        s = self.settings
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (s.chunk_size, s.action_dim):
            raise ValueError(
                f"actions must be [B, {s.chunk_size}, {s.action_dim}] (chunk_size x action_dim of "
                f"this tokenizer), got {list(actions.shape)}"
            )

    def _depth(self, held: int, n_layers: int | None, what: str) -> int:
        """The layers to decode: ``n_layers`` (default: all ``held``), within both the
        tokenizer's layers and the ``held`` layers of ``what`` was given."""
        layers = self.settings.layers
        k = held if n_layers is None else n_layers
        if not 1 <= k <= min(layers, held):
            raise ValueError(
                f"cannot decode with {k} layers: the tokenizer has {layers} and the {what} "
                f"hold {held}"
            )
        return k

    def _check_codes(self, codes: torch.Tensor, n_layers: int | None) -> int:
        s = self.settings
        if codes.ndim != 3 or codes.shape[2] != s.latent_steps or codes.shape[1] > s.layers:
            raise ValueError(
                f"codes must be [B, <= {s.layers} layers, {s.latent_steps}], got {list(codes.shape)}"
            )
        k = self._depth(codes.shape[1], n_layers, "codes")
        bad = (codes[:, :k] < 0) | (codes[:, :k] >= s.codebook_size)
        if bool(bad.any()):
            raise ValueError(
                f"codes outside the codebook 0..{s.codebook_size - 1}: "
                f"{sorted(set(codes[:, :k][bad].tolist()))[:8]}"
            )
        return k

    # ----------------------------------------------------------------------------- api
    def _latent(self, actions: torch.Tensor) -> torch.Tensor:
        s = self.settings
        z = self.encoder(actions.reshape(actions.shape[0], -1))
        z = z.reshape(actions.shape[0], s.latent_steps, s.latent_dim)
        return F.layer_norm(z, (s.latent_dim,)) if s.latent_norm else z

    def _actions(self, z: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return self.decoder(z.reshape(z.shape[0], -1)).reshape(-1, s.chunk_size, s.action_dim)

    def forward(
        self, actions: torch.Tensor, inputs: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training pass: (loss, parts) with the reconstruction MSE and the commitment loss.
        ``inputs`` (default: ``actions``) is what the encoder reads, e.g. the chunks with
        noise (a denoising fit), while the reconstruction target stays ``actions``."""
        self._check_actions(actions)
        if inputs is None:
            inputs = actions
        elif inputs.shape != actions.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} != actions {tuple(actions.shape)}")
        quantized, _, commit = self.rvq(self._latent(inputs))
        recon = self._actions(quantized)
        mse = F.mse_loss(recon, actions)
        commit = commit.sum()
        return mse + commit, {"mse": mse.detach(), "commit": commit.detach()}

    @torch.no_grad()
    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """float[B, T, A] -> long[B, layers, latent_steps] (all layers, no dropout)."""
        self._check_actions(actions)
        training = self.rvq.training
        self.rvq.eval()
        try:
            _, indices, _ = self.rvq(self._latent(actions))
        finally:
            self.rvq.train(training)
        return indices.permute(0, 2, 1).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """long[B, L, latent_steps] -> float[B, T, A] from the first ``n_layers`` layers."""
        k = self._check_codes(codes, n_layers)
        s = self.settings
        indices = torch.full(
            (codes.shape[0], s.latent_steps, s.layers), -1, dtype=torch.long, device=codes.device
        )
        indices[..., :k] = codes[:, :k].permute(0, 2, 1)
        return self._actions(self.rvq.get_output_from_indices(indices))

    @torch.no_grad()
    def decode_expected(self, probs: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """float[B, L, latent_steps, codebook_size] code probabilities (a policy's softmax) ->
        float[B, T, A] decoded from each layer's expected codebook vector (first ``n_layers``
        layers) instead of its most likely code: where a layer's code is uncertain its
        contribution shrinks toward the codebook's mean rather than committing to a wrong
        cell. One-hot probabilities give :meth:`decode` of their codes. Our own, since the
        library decodes indices only: the same codebooks and output projection it uses."""
        s = self.settings
        if probs.ndim != 4 or probs.shape[2:] != (s.latent_steps, s.codebook_size):
            raise ValueError(
                f"probs must be [B, <= {s.layers} layers, {s.latent_steps}, {s.codebook_size}], "
                f"got {list(probs.shape)}"
            )
        k = self._depth(probs.shape[1], n_layers, "probabilities")
        p = probs[:, :k].float()
        if bool((p < 0).any()) or not torch.allclose(
            p.sum(-1), torch.ones_like(p[..., 0]), atol=1e-3
        ):
            raise ValueError("probs must be distributions over the codebook (>= 0, summing to 1)")
        books = self.rvq.codebooks[:k].float()  # [k, K, D]
        latent = torch.einsum("blsc,lcd->bsd", p, books)
        return self._actions(self.rvq.project_out(latent))

    def config_dict(self) -> dict[str, Any]:
        return {"type": "rvq", **asdict(self.settings)}

    def check_matches(self, expected: RVQSettings) -> None:
        """A tokenizer checkpoint used for ``expected`` settings must have them exactly."""
        ours, theirs = asdict(self.settings), asdict(expected)
        diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        if diff:
            raise ConfigError(
                "the tokenizer checkpoint was trained with other settings (checkpoint, wanted): "
                + ", ".join(f"{k}={a} vs {b}" for k, (a, b) in diff.items())
            )
