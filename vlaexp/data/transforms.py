"""Image preprocessing shared by training (DataModule) and closed-loop evaluation.

One function path for both, so a policy never sees differently prepared images at
evaluation than in training (a classic cause of 0% success).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_with_pad(images: torch.Tensor, size: int, pad_value: float = 0.0) -> torch.Tensor:
    """Resize keeping the aspect ratio, then pad to a square, as openpi and LeRobot's Pi0 do.

    Args:
        images: float[..., C, H, W].
        size: side of the square output.
    Returns:
        float[..., C, size, size]; padding (right/bottom split evenly) holds ``pad_value``.
    """
    *lead, c, h, w = images.shape
    x = images.reshape(-1, c, h, w)
    if (h, w) != (size, size):
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (size - nh) // 2, (size - nw) // 2
        x = F.pad(x, (left, size - nw - left, top, size - nh - top), value=pad_value)
    return x.reshape(*lead, c, size, size)


def prepare_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """float[..., 3, H, W] in [0, 1] -> float[..., 3, size, size] in [-1, 1] (pad = -1)."""
    return resize_with_pad(images.clamp(0.0, 1.0), size) * 2.0 - 1.0


def hwc_uint8_to_chw_float(image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] (a simulator frame) -> float[3, H, W] in [0, 1] (a dataset frame)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
