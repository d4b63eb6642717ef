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


def augment_images(
    images: torch.Tensor,
    crop_scale: float = 0.95,
    rotate_deg: float = 5.0,
    brightness: float = 0.3,
    contrast: float = 0.4,
    saturation: float = 0.5,
    geometric: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """openpi's training augmentation of Pi0 images, with parameters drawn per image.

    float[B, 3, S, S] in [-1, 1] -> the same; float[B, T, 3, S, S] (a sample's T frames in
    time) -> the same, with one set of parameters for a sample's frames, so that what moves
    between them is the scene and not the crop. ``geometric``: a random crop of ``crop_scale``
    of each side at a random place, resized back to S, and a rotation by up to
    ``rotate_deg`` degrees (one bilinear resampling; what falls outside is black). Then
    colour jitter: brightness, contrast (around the image's mean grey) and saturation
    (around each pixel's grey), each factor uniform in 1 +- its value, clamped to [0, 1].

    Hand-written on ``affine_grid``: torchvision's v2 transforms draw one set of parameters
    per call, so per-image parameters would need a Python loop over the batch (hundreds of
    small kernels on a GPU per step); here the whole batch is a few batched ops.
    """
    shape = images.shape
    b, t = shape[0], (shape[1] if images.ndim == 5 else 1)
    dev = images.device

    def per_frame(u: torch.Tensor) -> torch.Tensor:  # a sample's draw for each of its frames
        return u.repeat_interleave(t, dim=0)

    def uniform(spread: float) -> torch.Tensor:
        u = torch.rand(b, device=dev, generator=generator) * 2.0 - 1.0
        return per_frame(1.0 + spread * u)

    x = (images.float().reshape(b * t, *shape[-3:]) + 1.0) / 2.0
    n = b * t
    if geometric:
        angle = torch.deg2rad(
            (torch.rand(b, device=dev, generator=generator) * 2.0 - 1.0) * rotate_deg
        )
        # affine_grid maps output coordinates in [-1, 1] to input ones: a crop of side
        # `crop_scale` centred at `shift` (inside the image), rotated by `angle`
        shift = (torch.rand(b, 2, device=dev, generator=generator) * 2.0 - 1.0) * (1.0 - crop_scale)
        angle, shift = per_frame(angle), per_frame(shift)
        cos, sin = torch.cos(angle) * crop_scale, torch.sin(angle) * crop_scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = (x * uniform(brightness).view(n, 1, 1, 1)).clamp(0.0, 1.0)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = grey.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * uniform(contrast).view(n, 1, 1, 1) + mean).clamp(0.0, 1.0)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = ((x - grey) * uniform(saturation).view(n, 1, 1, 1) + grey).clamp(0.0, 1.0)
    return (x * 2.0 - 1.0).reshape(shape).to(images.dtype)


def augment_camera(images: torch.Tensor, cfg, camera: str) -> torch.Tensor:
    """:func:`augment_images` with the settings of an ``ImageAugmentConfig`` (``cfg``) for
    the images of ``camera``: no crop or rotation for cameras in ``cfg.no_geometric``."""
    return augment_images(
        images,
        cfg.crop_scale,
        cfg.rotate_deg,
        cfg.brightness,
        cfg.contrast,
        cfg.saturation,
        geometric=camera not in cfg.no_geometric,
    )


def hwc_uint8_to_chw_float(image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] (a simulator frame) -> float[3, H, W] in [0, 1] (a dataset frame)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8[H, W, 3], got {image.dtype}{list(image.shape)}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
