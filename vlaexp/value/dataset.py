"""Value labels on dataset samples: each frame's normalized time-to-go as ``value``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlaexp.value.labels import N_BINS, episode_labels


def frame_values(
    episodes: list[Mapping[str, Any]], c_fail: float | None = None, n_bins: int = N_BINS
) -> dict[int, np.ndarray]:
    """``{episode_index: float32[length] values in [-1, 0]}`` (see :func:`episode_labels`)."""
    return {
        int(lab["episode_index"]): lab["values"].astype(np.float32)
        for lab in episode_labels(episodes, c_fail, n_bins)
    }


class ValueLabels(Dataset):
    """Adds ``value`` (float32 scalar) to every sample of ``dataset``, looked up by the
    sample's ``episode_index`` and ``frame_index``."""

    def __init__(self, dataset: Dataset, values: dict[int, np.ndarray]) -> None:
        self.dataset = dataset
        self.values = values

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.dataset[idx]
        episode, frame = int(item["episode_index"]), int(item["frame_index"])
        item["value"] = torch.tensor(self.values[episode][frame], dtype=torch.float32)
        return item
