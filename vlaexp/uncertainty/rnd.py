"""Random Network Distillation over vision tokens, one model per (task type x camera).

A frozen, randomly initialized *target* network maps each token embedding to 512 features; a
deeper *predictor* is trained to reproduce them on tokens of successful demonstrations. Its
error on a new token is that token's novelty: small where the scene looks like the training
data, large where it does not. The layer sizes, LeakyReLU/ReLU placement and orthogonal
initialization (gain sqrt 2, zero biases) follow FIPER's RND.

No library ships RND as a module (it is two MLPs and a loss), hence this file; the training
loop, checkpoints and early stopping are Lightning's.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

OUT_DIM = 512


def _mlp(sizes: list[int], activations: list[type[nn.Module] | None]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for (i, o), act in zip(itertools.pairwise(sizes), activations, strict=True):
        layers.append(nn.Linear(i, o))
        if act is not None:
            layers.append(act())
    return nn.Sequential(*layers)


def target_network(in_dim: int) -> nn.Sequential:
    """Linear(d,1024)-LeakyReLU-Linear(1024,2048)-LeakyReLU-Linear(2048,4096)-LeakyReLU-Linear(4096,512)."""
    leaky = nn.LeakyReLU
    return _mlp([in_dim, 1024, 2048, 4096, OUT_DIM], [leaky, leaky, leaky, None])


def predictor_network(in_dim: int) -> nn.Sequential:
    """Linear(d,1024)-LeakyReLU-(2048)-LeakyReLU-(4096)-LeakyReLU-Linear(4096,2048)-ReLU-
    Linear(2048,1024)-ReLU-Linear(1024,512)."""
    leaky, relu = nn.LeakyReLU, nn.ReLU
    return _mlp(
        [in_dim, 1024, 2048, 4096, 2048, 1024, OUT_DIM], [leaky, leaky, leaky, relu, relu, None]
    )


def _init_orthogonal(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
            nn.init.zeros_(m.bias)


class RND(nn.Module):
    """Target and predictor over ``in_dim``-wide tokens; ``forward`` gives per-token scores."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"RND input width must be positive, got {in_dim}")
        self.in_dim = in_dim
        self.target = target_network(in_dim)
        self.predictor = predictor_network(in_dim)
        _init_orthogonal(self)
        self.target.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """float[..., in_dim] -> float32[...]: mean squared error of the predictor per token.
        Runs in the weights' dtype (bfloat16 weights score in bfloat16), the error in float32."""
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(
                f"tokens are {tokens.shape[-1]}-wide, this RND was built for {self.in_dim}"
            )
        x = tokens.to(next(self.predictor.parameters()).dtype)
        with torch.no_grad():
            target = self.target(x)
        return F.mse_loss(self.predictor(x).float(), target.float(), reduction="none").mean(dim=-1)


class RNDModule(pl.LightningModule):
    """One RND trained on the shared Trainer: batches are float[B, d] tokens (any float
    dtype; the stores hold fp16), the loss is their mean score, logged as
    ``rnd/<camera>/train_loss`` and ``rnd/<camera>/val_loss`` (``rnd/...`` without a camera)."""

    def __init__(self, in_dim: int, lr: float = 1e-4, camera: str = "", task_type: str = ""):
        super().__init__()
        self.save_hyperparameters()
        self.rnd = RND(in_dim)
        self.prefix = f"rnd/{camera}" if camera else "rnd"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.rnd(tokens)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.rnd(batch).mean()
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.rnd(batch).mean()
        self.log(f"{self.prefix}/val_loss", loss, prog_bar=True, batch_size=batch.shape[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.rnd.predictor.parameters(), lr=self.hparams.lr)


def spatial_map(scores: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Per-token scores float[..., N] of a square token grid -> float[..., g, g] (g = sqrt N),
    bilinearly upsampled to ``size`` x ``size`` when given (224 for Pi0's images)."""
    n = scores.shape[-1]
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    grid = scores.reshape(*scores.shape[:-1], g, g)
    if size is None:
        return grid
    flat = grid.reshape(-1, 1, g, g).float()
    up = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return up.reshape(*scores.shape[:-1], size, size)


@torch.no_grad()
def score_cameras(
    models: dict[str, RND], tokens: dict[str, torch.Tensor], maps: bool = True
) -> dict[str, Any]:
    """One step's uncertainty: every camera's tokens float[N, d] through its RND in one
    batched pass. Returns ``{camera: mean score, 'overall': mean over cameras,
    'spatial_maps': {camera: float[g, g]}}`` (maps only when ``maps``)."""
    missing = sorted(set(tokens) - set(models))
    if missing:
        raise KeyError(f"no RND for camera(s) {missing}; have {sorted(models)}")
    out: dict[str, Any] = {}
    grids = {}
    for cam, t in tokens.items():
        s = models[cam](t)
        out[cam] = float(s.mean())
        if maps:
            grids[cam] = spatial_map(s.cpu())
    out["overall"] = sum(out[c] for c in tokens) / len(tokens)
    if maps:
        out["spatial_maps"] = grids
    return out
