"""Value over time for one episode: the predicted distribution as a heat strip under the
expected value and the true (label) value."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vlaexp.value.labels import expected_value


def plot_value_over_time(
    path: str | Path, logits: torch.Tensor, true_values: np.ndarray, title: str
) -> Path:
    """float[T, n_bins] logits and float[T] labels -> a PNG: per step the predicted
    probability of every bin on [-1, 0] (a column of the heat strip), the expected value
    and the true value as lines."""
    logits = torch.as_tensor(logits).float()
    true_values = np.asarray(true_values, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != true_values.shape[0]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and values {true_values.shape} must be [T, bins], [T]"
        )
    steps = logits.shape[0]
    probs = logits.softmax(-1).numpy().T  # [bins, T], row 0 = value -1
    fig = Figure(figsize=(8, 3), dpi=100)
    FigureCanvasAgg(fig)  # draws off-screen; pyplot's global backend is untouched
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(
        probs,
        aspect="auto",
        origin="lower",
        extent=(-0.5, steps - 0.5, -1.0, 0.0),
        cmap="magma",
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="p(bin)")
    t = np.arange(steps)
    ax.plot(t, expected_value(logits).numpy(), color="white", lw=1.5, label="expected value")
    ax.plot(t, true_values, color="cyan", lw=1.2, ls="--", label="true value")
    ax.set_ylim(-1.0, 0.0)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    # wrapped: a long task instruction otherwise runs off the figure's edges
    ax.set_title(textwrap.fill(title, 80), fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
