"""Pictures of RND uncertainty: where in each camera image and when in an episode it is high.

Per step and camera: the token map (float[g, g], high = unfamiliar) bilinearly upsampled to
the frame, as a pure heatmap and as a red overlay on the frame (``save_step_images``); per
step, all cameras' overlays side by side as an H.264 video (``write_overlay_video``). Per
episode: score vs step with the alarm threshold and the alarm (``plot_timeline``); over
episodes: successes against failures (``plot_success_vs_failure``). ``log_to_wandb`` sends
the written files to a wandb run.

Colours are comparable across steps only under one normalization: pass the same
``vmin``/``vmax`` for every step of an episode (``shared_range`` computes them). Plots draw on
``matplotlib.figure.Figure`` with the Agg canvas, so the global pyplot backend is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ArrayLike = np.ndarray | torch.Tensor

__all__ = [
    "heatmap_rgb",
    "log_to_wandb",
    "overlay",
    "plot_success_vs_failure",
    "plot_timeline",
    "save_step_images",
    "shared_range",
    "upsample_map",
    "write_overlay_video",
]

_RED = np.array([255.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- maps, pixels


def _as_map(m: ArrayLike, name: str = "map") -> np.ndarray:
    """A 2-D float64 array from a numpy array or tensor; ValueError otherwise."""
    arr = m.detach().cpu().double().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (g, g), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_frame(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (H, W, 3), got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} must have shape (H, W, 3), got {frame.shape}")
    return frame


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be two positive ints (H, W), got {size}")
    return int(size[0]), int(size[1])


def upsample_map(m: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample a token map float[g, g] to ``size`` = (H, W) (``align_corners=False``,
    so each token covers its own H/g x W/g block). Returns float32[H, W]."""
    h, w = _check_size(size)
    grid = torch.from_numpy(np.ascontiguousarray(_as_map(m), dtype=np.float32))
    up = F.interpolate(grid[None, None], size=(h, w), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _normalize(
    values: np.ndarray, ref: np.ndarray, vmin: float | None, vmax: float | None
) -> np.ndarray:
    """``values`` mapped to [0, 1] by vmin/vmax (default: ``ref``'s finite min/max), clipped;
    a zero or invalid range and non-finite values give 0."""
    finite = ref[np.isfinite(ref)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 0.0)
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return np.zeros(values.shape, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.clip((values - lo) / span, 0.0, 1.0)
    return np.nan_to_num(out, nan=0.0)


def heatmap_rgb(
    m: ArrayLike,
    size: tuple[int, int],
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "jet",
) -> np.ndarray:
    """The map upsampled to ``size`` = (H, W), normalized by vmin/vmax (default: the token
    map's own min/max; a constant map is all low) and coloured by ``cmap``: uint8[H, W, 3]."""
    raw = _as_map(m)
    norm = _normalize(upsample_map(raw, size), raw, vmin, vmax)
    rgba = matplotlib.colormaps[cmap](norm)
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(
    frame: np.ndarray,
    m: ArrayLike,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Red = unfamiliar: per pixel ``out = (1 - a) * frame + a * (255, 0, 0)`` with
    ``a = alpha * u``, u the upsampled map normalized to [0, 1] by vmin/vmax (default: the
    token map's min/max). u = 0 keeps the frame's colour exactly. Returns uint8[H, W, 3]."""
    frame = _check_frame(frame)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    raw = _as_map(m)
    u = _normalize(upsample_map(raw, frame.shape[:2]), raw, vmin, vmax)
    a = (alpha * u)[..., None]
    out = (1.0 - a) * frame.astype(np.float64) + a * _RED
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shared_range(maps: Mapping[str, ArrayLike] | Sequence[ArrayLike]) -> tuple[float, float]:
    """(vmin, vmax) over the finite values of all given maps (any shapes, e.g. float[T, g, g]
    per camera): one normalization for a whole episode. (0, 0) when there are none."""
    items = maps.values() if isinstance(maps, Mapping) else maps
    lo, hi = math.inf, -math.inf
    for m in items:
        arr = m.detach().cpu().double().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        finite = arr[np.isfinite(arr)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _check_cameras(frames: Mapping[str, Any], maps: Mapping[str, Any]) -> None:
    only_maps, only_frames = sorted(set(maps) - set(frames)), sorted(set(frames) - set(maps))
    if only_maps or only_frames:
        raise ValueError(
            f"cameras differ between frames and maps: only in maps {only_maps}, "
            f"only in frames {only_frames}"
        )
    if not frames:
        raise ValueError("no cameras given")
    for cam in frames:
        if not cam or "/" in cam or "\\" in cam:
            raise ValueError(f"camera name {cam!r} cannot be used in a file name")


def save_step_images(
    out_dir: str | Path,
    step: int,
    frames: Mapping[str, np.ndarray],
    maps: Mapping[str, ArrayLike],
    vmin: float | None = None,
    vmax: float | None = None,
) -> list[Path]:
    """Write ``timestep_{step:03d}_{camera}_overlay.png`` and ``..._heatmap.png`` (frame-sized)
    for each camera into ``out_dir`` (created). vmin/vmax None: each map's own min/max.
    Returns the paths, overlay then heatmap per camera in ``frames``' order."""
    _check_cameras(frames, maps)
    images: list[tuple[str, str, np.ndarray]] = []
    for cam, frame in frames.items():  # everything computed (and validated) before writing
        frame = _check_frame(frame, f"frame of camera {cam!r}")
        images.append((cam, "overlay", overlay(frame, maps[cam], vmin, vmax)))
        images.append((cam, "heatmap", heatmap_rgb(maps[cam], frame.shape[:2], vmin, vmax)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for cam, kind, img in images:
        path = out / f"timestep_{step:03d}_{cam}_{kind}.png"
        iio.imwrite(path, img)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- plots


def _new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _finish(fig: Figure, ax: Axes, path: str | Path, title: str, ylabel: str) -> Path:
    """Title, axis labels, grid and legend of a score-vs-step plot; writes the PNG."""
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _as_series(x: ArrayLike, name: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (steps,), got shape {arr.shape}")
    return arr


def _draw_threshold(ax: Axes, threshold: float | ArrayLike | None) -> None:
    if threshold is None:
        return
    thr = (
        threshold.detach().cpu().double().numpy()
        if isinstance(threshold, torch.Tensor)
        else np.asarray(threshold, dtype=np.float64)
    )
    if thr.ndim == 0:
        ax.axhline(float(thr), color="black", linestyle="--", linewidth=1.2, label="threshold")
    elif thr.ndim == 1:
        ax.plot(
            np.arange(len(thr)),
            thr,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label="threshold",
        )
    else:
        raise ValueError(f"threshold must be a scalar or 1-D per step, got shape {thr.shape}")


def plot_timeline(
    path: str | Path,
    scores: Mapping[str, ArrayLike],
    threshold: float | ArrayLike | None,
    alarm_step: int | None,
    success: bool | None,
    title: str,
) -> Path:
    """Uncertainty vs step of one episode: ``scores['overall']`` thick, every other camera
    thin, the threshold (scalar: horizontal line; per step: a curve), a vertical line labelled
    "alarm" at ``alarm_step``; the title ends in success/failure. Writes a PNG, returns it."""
    if not scores:
        raise ValueError("scores is empty")
    series = {k: _as_series(v, f"scores[{k!r}]") for k, v in scores.items()}
    fig, ax = _new_axes((8.0, 4.0))
    if "overall" in series:
        s = series["overall"]
        ax.plot(np.arange(len(s)), s, color="black", linewidth=2.5, label="overall")
    for cam, s in series.items():
        if cam != "overall":
            ax.plot(np.arange(len(s)), s, linewidth=1.0, alpha=0.85, label=cam)
    _draw_threshold(ax, threshold)
    if alarm_step is not None:
        ax.axvline(alarm_step, color="red", linewidth=1.8, label="alarm")
        ax.annotate(
            "alarm",
            xy=(alarm_step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            color="red",
        )
    outcome = {True: "success", False: "failure", None: "outcome unknown"}[
        None if success is None else bool(success)
    ]
    return _finish(fig, ax, path, f"{title} ({outcome})" if title else outcome, "RND uncertainty")


def _group_mean(curves: list[np.ndarray]) -> np.ndarray:
    """Mean per step over the curves still running at that step (NaN-padded, NaN-ignoring)."""
    n = max(len(c) for c in curves)
    stack = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        stack[i, : len(c)] = c
    valid = np.isfinite(stack)
    counts = valid.sum(axis=0)
    sums = np.where(valid, stack, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(n, np.nan), where=counts > 0)


def plot_success_vs_failure(
    path: str | Path,
    episodes: Sequence[tuple[ArrayLike, bool]],
    threshold: float | ArrayLike | None = None,
) -> Path:
    """Every episode's overall score vs step (green: success, red: failure, thin) and each
    group's mean over the episodes still running at a step (thick); optional threshold.
    Either group may be empty. Writes a PNG, returns it."""
    if not episodes:
        raise ValueError("episodes is empty")
    groups: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for i, (s, ok) in enumerate(episodes):
        groups[bool(ok)].append(_as_series(s, f"episodes[{i}] scores"))
    fig, ax = _new_axes((8.0, 4.0))
    for ok, colour, name in ((True, "tab:green", "success"), (False, "tab:red", "failure")):
        curves = [c for c in groups[ok] if len(c)]
        for c in curves:
            ax.plot(np.arange(len(c)), c, color=colour, linewidth=0.8, alpha=0.35)
        if curves:
            mean = _group_mean(curves)
            ax.plot(
                np.arange(len(mean)),
                mean,
                color=colour,
                linewidth=2.5,
                label=f"{name} mean (n={len(curves)})",
            )
    _draw_threshold(ax, threshold)
    title = f"RND uncertainty: {len(groups[True])} successes vs {len(groups[False])} failures"
    return _finish(fig, ax, path, title, "overall RND uncertainty")


# ----------------------------------------------------------------------------- video, wandb


def _pad_even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))


def write_overlay_video(
    path: str | Path,
    frames: Mapping[str, Sequence[np.ndarray] | np.ndarray],
    maps: Mapping[str, ArrayLike],
    fps: float = 10,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """An H.264 mp4 with, per step, every camera's ``overlay`` side by side (in ``frames``'
    order; shorter images padded at the bottom, the whole padded right/bottom to even
    width/height). frames[cam]: uint8[T, H, W, 3] or a list of T frames; maps[cam]:
    float[T, g, g]. vmin/vmax None: per camera, the min/max over all its T maps (colours stay
    comparable across steps). Returns ``path``."""
    _check_cameras(frames, maps)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    cams = list(frames)
    map_arrs: dict[str, np.ndarray] = {}
    lengths: dict[str, int] = {}
    for cam in cams:
        mp = maps[cam]
        arr = mp.detach().cpu().double().numpy() if isinstance(mp, torch.Tensor) else np.asarray(mp)
        if arr.ndim != 3:
            raise ValueError(f"maps[{cam!r}] must be (T, g, g), got shape {arr.shape}")
        if len(frames[cam]) != len(arr):
            raise ValueError(f"camera {cam!r} has {len(frames[cam])} frames but {len(arr)} maps")
        map_arrs[cam], lengths[cam] = arr, len(arr)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"cameras have different numbers of steps T: {lengths}")
    t = lengths[cams[0]]
    if t == 0:
        raise ValueError("no steps to write (T = 0)")
    for cam in cams:  # validate every frame before the file is opened
        shapes = {
            _check_frame(np.asarray(f), f"frame of camera {cam!r}").shape for f in frames[cam]
        }
        if len(shapes) != 1:
            raise ValueError(
                f"camera {cam!r} changes frame size within the video: {sorted(shapes)}"
            )
    ranges: dict[str, tuple[float, float]] = {}
    for cam in cams:
        lo, hi = shared_range([map_arrs[cam]])
        ranges[cam] = (lo if vmin is None else vmin, hi if vmax is None else vmax)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with iio.imopen(path, "w", plugin="pyav") as video:
        video.init_video_stream("libx264", fps=fps, pixel_format="yuv420p")
        for i in range(t):
            tiles = [overlay(np.asarray(frames[c][i]), map_arrs[c][i], *ranges[c]) for c in cams]
            h = max(tile.shape[0] for tile in tiles)
            tiles = [np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0))) for x in tiles]
            video.write_frame(np.ascontiguousarray(_pad_even(np.concatenate(tiles, axis=1))))
    return path


def log_to_wandb(
    run: Any, images: Mapping[str, str | Path], videos: Mapping[str, str | Path] | None = None
) -> None:
    """One ``run.log`` call with each PNG as ``wandb.Image`` and each mp4 as ``wandb.Video``
    under its key. ``run`` None: nothing. ImportError when wandb is not installed."""
    if run is None:
        return
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            "log_to_wandb needs the `wandb` package (pip install wandb), or pass run=None"
        ) from e
    videos = videos or {}
    for key, p in (*images.items(), *videos.items()):
        if not Path(p).is_file():
            raise FileNotFoundError(f"file for wandb key {key!r} not found: '{p}'")
    payload: dict[str, Any] = {k: wandb.Image(str(p)) for k, p in images.items()}
    payload.update({k: wandb.Video(str(p), format="mp4") for k, p in videos.items()})
    if payload:
        run.log(payload)
