"""Feature normalization with statistics that travel with the policy's weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from vlaexp.errors import ConfigError

MODES = ("mean_std", "quantile", "identity")
_EPS = 1e-8


class Normalizer(nn.Module):
    """Normalizes named features (``observation.state``, ``action``) with stored statistics.

    ``mean_std``: (x - mean) / std. ``quantile``: q01/q99 mapped to [-1, 1] (Pi0.5's
    scheme; values outside are not clipped). ``identity``: unchanged. Statistics are
    buffers, so they are saved with the checkpoint (see ``training/pretrained.py``).
    """

    def __init__(
        self,
        modes: Mapping[str, str],
        dims: Mapping[str, int],
        stats: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        super().__init__()
        self.modes = dict(modes)
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise ConfigError(f"Unknown normalization mode '{mode}' for {key}; valid: {MODES}")
            d = dims[key]
            for stat, fill in (("mean", 0.0), ("std", 1.0), ("q01", -1.0), ("q99", 1.0)):
                self.register_buffer(self._name(key, stat), torch.full((d,), fill))
        self.register_buffer("initialized", torch.tensor(False))
        if stats is not None:
            self.set_stats(stats)

    @staticmethod
    def _name(key: str, stat: str) -> str:
        return f"{key.replace('.', '_')}__{stat}"

    def set_stats(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Copy ``stats[key][mean|std|q01|q99]`` (as LeRobotDataset's meta/stats.json holds)."""
        for key, mode in self.modes.items():
            if mode == "identity":
                continue
            if key not in stats:
                raise ConfigError(f"No statistics for '{key}' in the dataset (needed by {mode})")
            needed = ("mean", "std") if mode == "mean_std" else ("q01", "q99")
            for stat in needed:
                if stat not in stats[key]:
                    raise ConfigError(f"Dataset statistics for '{key}' lack '{stat}' ({mode})")
                value = torch.as_tensor(np.asarray(stats[key][stat], dtype=np.float32)).flatten()
                buf = getattr(self, self._name(key, stat))
                if value.shape != buf.shape:
                    raise ConfigError(
                        f"Statistics '{key}.{stat}' have shape {tuple(value.shape)}, the policy "
                        f"expects {tuple(buf.shape)}: check policy.state_dim / policy.action_dim"
                    )
                buf.copy_(value)
        self.initialized.fill_(True)

    def _check(self) -> None:
        if not bool(self.initialized) and any(m != "identity" for m in self.modes.values()):
            raise RuntimeError(
                "Normalizer has no statistics: build the policy with dataset stats or load it "
                "from a pretrained_model directory"
            )

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """x: float[..., D] in raw units -> normalized float[..., D]."""
        self._check()
        mode = self.modes[key]
        if mode == "mean_std":
            mean, std = (getattr(self, self._name(key, s)) for s in ("mean", "std"))
            return (x - mean) / (std + _EPS)
        if mode == "quantile":
            lo, hi = (getattr(self, self._name(key, s)) for s in ("q01", "q99"))
            return 2.0 * (x - lo) / (hi - lo + _EPS) - 1.0
        return x

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: float[..., D] -> raw units."""
        self._check()
        mode = self.modes[key]
        if mode == "mean_std":
            mean, std = (getattr(self, self._name(key, s)) for s in ("mean", "std"))
            return x * (std + _EPS) + mean
        if mode == "quantile":
            lo, hi = (getattr(self, self._name(key, s)) for s in ("q01", "q99"))
            return (x + 1.0) / 2.0 * (hi - lo + _EPS) + lo
        return x
