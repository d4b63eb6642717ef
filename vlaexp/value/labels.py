"""Value labels from episode outcomes: negative time-to-go, normalized per task, in 201 bins.

A successful episode of ``T`` steps has value ``-(T - 1 - t)`` at step ``t``: 0 at the step
that succeeds, -1 the step before, and so on. A failed one has the same count of steps to its
end *plus* the failure penalty ``c_fail``: ``-(T - 1 - t) - c_fail``. Values are divided by the
task's longest episode and clipped to [-1, 0], then discretized into ``n_bins`` (201) bins
whose centres are evenly spaced on [-1, 0]. ``c_fail`` trades how early failures look bad: 0
makes a failure look like a success that ends late; the task's max length makes every failed
frame -1 (trivially separable, and uninformative); the default is half the max length.

The targets of the two losses: one-hot on the label's bin (cross-entropy) and HL-Gauss (a
Gaussian of ``sigma`` bin widths around the value, integrated over each bin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vlaexp.errors import VlaexpError

N_BINS = 201


def bin_centers(n_bins: int = N_BINS) -> np.ndarray:
    return np.linspace(-1.0, 0.0, n_bins)


def time_to_go_values(length: int, success: bool, c_fail: float) -> np.ndarray:
    """Raw values float[length] of one episode (before normalization)."""
    if length < 1:
        raise ValueError(f"an episode needs at least one step, got {length}")
    v = -(length - 1 - np.arange(length, dtype=np.float64))
    return v if success else v - float(c_fail)


def episode_labels(
    episodes: Sequence[Mapping[str, Any]],
    c_fail: float | None = None,
    n_bins: int = N_BINS,
) -> list[dict[str, Any]]:
    """Per episode (``{"episode_index", "task", "length", "success"}``): normalized values
    float[length] in [-1, 0] and their bins long[length]. ``c_fail`` None = half of each
    task's longest episode. An episode without a success flag is an error."""
    missing = [e.get("episode_index") for e in episodes if e.get("success") is None]
    if missing:
        raise VlaexpError(
            f"episodes {missing[:10]} have no success flag: value labels need to know which "
            "episodes succeeded (record them with the collect stage, or add next.success)"
        )
    longest: dict[Any, int] = {}
    for e in episodes:
        longest[e["task"]] = max(longest.get(e["task"], 0), int(e["length"]))
    out = []
    for e in episodes:
        scale = longest[e["task"]]
        penalty = 0.5 * scale if c_fail is None else c_fail
        raw = time_to_go_values(int(e["length"]), bool(e["success"]), penalty)
        values = np.clip(raw / scale, -1.0, 0.0)
        out.append(
            {
                "episode_index": e["episode_index"],
                "task": e["task"],
                "success": bool(e["success"]),
                "values": values,
                "bins": value_to_bin(values, n_bins),
            }
        )
    return out


def value_to_bin(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Nearest bin of values in [-1, 0] (out-of-range values are an error)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and (v.min() < -1 - 1e-9 or v.max() > 1e-9):
        raise ValueError(f"values must lie in [-1, 0], got [{v.min()}, {v.max()}]")
    return np.rint((v + 1.0) * (n_bins - 1)).astype(np.int64)


def hl_gauss_targets(values: torch.Tensor, n_bins: int = N_BINS, sigma_bins: float = 0.75):
    """float[..., n_bins]: a Gaussian of ``sigma_bins`` bin widths around each value, its mass
    per bin (edges halfway between centres, the outer edges at +-half a bin past -1 and 0),
    renormalized to sum to 1."""
    width = 1.0 / (n_bins - 1)
    edges = torch.linspace(
        -1 - width / 2, width / 2, n_bins + 1, dtype=torch.float64, device=values.device
    )
    sigma = sigma_bins * width
    cdf = torch.special.ndtr((edges - values.double()[..., None]) / sigma)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return (mass / mass.sum(-1, keepdim=True)).to(values.dtype)


def value_loss(logits: torch.Tensor, values: torch.Tensor, kind: str = "ce", sigma_bins=0.75):
    """Cross-entropy of float[..., n_bins] logits against the value's bin (``ce``) or its
    HL-Gauss distribution (``hl_gauss``)."""
    n_bins = logits.shape[-1]
    if kind == "ce":
        target = torch.from_numpy(value_to_bin(values.detach().cpu().numpy(), n_bins))
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, n_bins), target.reshape(-1).to(logits.device)
        )
    if kind == "hl_gauss":
        target = hl_gauss_targets(values, n_bins, sigma_bins).to(logits.dtype)
        return -(target * logits.log_softmax(-1)).sum(-1).mean()
    raise ValueError(f"value loss must be 'ce' or 'hl_gauss', got '{kind}'")


def expected_value(logits: torch.Tensor) -> torch.Tensor:
    """sum_b p_b v_b over the bins (the scalar prediction)."""
    centers = torch.linspace(-1.0, 0.0, logits.shape[-1], device=logits.device)
    return (logits.softmax(-1) * centers).sum(-1)
