"""Uncertainty pictures: upsampling, overlay arithmetic, step images, plots, video, wandb."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
import torch

from vlaexp.uncertainty.visualize import (
    _group_mean,
    heatmap_rgb,
    log_to_wandb,
    overlay,
    plot_success_vs_failure,
    plot_timeline,
    save_step_images,
    shared_range,
    upsample_map,
    write_overlay_video,
)

FRAME_RGB = (100, 150, 200)


def _frame(h: int, w: int, rgb: tuple[int, int, int] = FRAME_RGB) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _left_hot(g: int = 8) -> np.ndarray:
    """Left half of the tokens 1, right half 0."""
    m = np.zeros((g, g), dtype=np.float32)
    m[:, : g // 2] = 1.0
    return m


# ----------------------------------------------------------------------------- maps, pixels


def test_upsample_puts_a_hot_token_in_its_image_region() -> None:
    g = 8
    m = np.zeros((g, g), dtype=np.float32)
    m[0, g - 1] = 1.0  # top-right token
    up = upsample_map(m, (64, 48))
    assert up.shape == (64, 48)
    assert up.dtype == np.float32
    r, c = np.unravel_index(np.argmax(up), up.shape)
    assert r < 64 // g and c >= 48 - 48 // g  # inside the token's own block
    assert up[:32, 24:].sum() == pytest.approx(up.sum())  # nothing leaks out of the quadrant
    np.testing.assert_allclose(upsample_map(torch.from_numpy(m), (64, 48)), up)
    # align_corners=False: pixel centres at (c + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped)
    ramp = upsample_map(np.array([[0.0, 1.0], [0.0, 1.0]]), (2, 4))
    np.testing.assert_allclose(ramp, [[0.0, 0.25, 0.75, 1.0]] * 2)


def test_overlay_keeps_cold_pixels_and_blends_hot_ones_toward_red_by_alpha() -> None:
    frame = _frame(32, 32)
    out = overlay(frame, _left_hot(), alpha=0.4)
    assert out.shape == frame.shape and out.dtype == np.uint8
    # Tokens are 4 px wide: columns 0..12 interpolate only between hot tokens, 19..31 only cold.
    np.testing.assert_array_equal(out[:, 19:], frame[:, 19:])
    # u = 1: (1 - 0.4) * (100, 150, 200) + 0.4 * (255, 0, 0) = (162, 90, 120)
    assert (out[:, :13] == np.array([162, 90, 120], dtype=np.uint8)).all()
    assert (
        out[0, 0, 0] > FRAME_RGB[0] and out[0, 0, 1] < FRAME_RGB[1] and out[0, 0, 2] < FRAME_RGB[2]
    )


def test_overlay_uses_the_callers_shared_range() -> None:
    frame = _frame(16, 16)
    const = np.ones((8, 8))
    # Own range of a constant map is empty -> no tint at all.
    np.testing.assert_array_equal(overlay(frame, const, alpha=0.8), frame)
    # Shared range [0, 2]: u = 0.5, a = 0.8 * 0.5 = 0.4 -> same blend as above, everywhere.
    out = overlay(frame, const, vmin=0.0, vmax=2.0, alpha=0.8)
    assert (out == np.array([162, 90, 120], dtype=np.uint8)).all()
    # Values beyond vmax clip to the full alpha.
    clipped = overlay(frame, const * 10, vmin=0.0, vmax=2.0, alpha=0.4)
    assert (clipped == np.array([162, 90, 120], dtype=np.uint8)).all()


def test_heatmap_of_a_constant_map_is_one_finite_colour() -> None:
    hm = heatmap_rgb(np.full((8, 8), 3.0), (16, 20))
    assert hm.shape == (16, 20, 3) and hm.dtype == np.uint8
    low = np.rint(np.array(matplotlib.colormaps["jet"](0.0)[:3]) * 255).astype(np.uint8)
    assert (hm == low).all()
    hot = heatmap_rgb(_left_hot(), (32, 32), cmap="gray")
    assert (hot[:, :13] == 255).all() and (hot[:, 19:] == 0).all()


def test_shared_range_spans_all_maps() -> None:
    maps = {"a": np.array([[[0.5, 2.0]]]), "b": torch.tensor([[-1.0, np.nan]])}
    assert shared_range(maps) == (-1.0, 2.0)
    assert shared_range([]) == (0.0, 0.0)


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.zeros((16, 16, 3), dtype=np.float32), "uint8"),
        (np.zeros((16, 16), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((16, 16, 4), dtype=np.uint8), r"\(H, W, 3\)"),
    ],
)
def test_overlay_rejects_bad_frames(frame: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        overlay(frame, np.zeros((8, 8)))


def test_overlay_rejects_bad_maps_and_alpha() -> None:
    with pytest.raises(ValueError, match="2-D"):
        overlay(_frame(16, 16), np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="alpha"):
        overlay(_frame(16, 16), np.zeros((8, 8)), alpha=1.5)


# ----------------------------------------------------------------------------- step images


def test_save_step_images_writes_both_pngs_per_camera(tmp_path: Path) -> None:
    frames = {"agentview": _frame(32, 48), "wrist": _frame(24, 24, (10, 20, 30))}
    maps = {"agentview": _left_hot(), "wrist": torch.rand(8, 8)}
    paths = save_step_images(tmp_path / "steps", 7, frames, maps, vmin=0.0, vmax=1.0)
    assert [p.name for p in paths] == [
        "timestep_007_agentview_overlay.png",
        "timestep_007_agentview_heatmap.png",
        "timestep_007_wrist_overlay.png",
        "timestep_007_wrist_heatmap.png",
    ]
    for p in paths:
        cam = p.name.split("_")[2]
        img = iio.imread(p)
        assert img.shape == frames[cam].shape and img.dtype == np.uint8
    # PNG is lossless: the overlay file holds exactly what overlay() computes.
    expected = overlay(frames["agentview"], maps["agentview"], 0.0, 1.0)
    np.testing.assert_array_equal(iio.imread(paths[0]), expected)


def test_save_step_images_names_mismatched_cameras(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"only in maps \['wrist'\].*only in frames \['front'\]"):
        save_step_images(
            tmp_path, 0, {"front": _frame(8, 8)}, {"wrist": np.zeros((8, 8))}, None, None
        )
    # A bad second camera: nothing is written, not even the good first camera's files.
    frames = {"good": _frame(8, 8), "bad": np.zeros((8, 8, 3))}
    with pytest.raises(ValueError, match="uint8"):
        save_step_images(tmp_path, 0, frames, {"good": np.zeros((8, 8)), "bad": np.zeros((8, 8))})
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- plots


def test_plot_timeline_draws_alarm_and_per_step_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {"overall": rng.random(40), "agentview": rng.random(40), "wrist": rng.random(40)}
    kw = {"threshold": 0.7, "success": False, "title": "ep 3"}
    with_alarm = plot_timeline(tmp_path / "a" / "alarm.png", scores, alarm_step=12, **kw)
    without = plot_timeline(tmp_path / "none.png", scores, alarm_step=None, **kw)
    img_a, img_n = iio.imread(with_alarm), iio.imread(without)
    assert with_alarm.stat().st_size > 0 and img_a.shape == img_n.shape
    assert (img_a != img_n).any()
    per_step = plot_timeline(
        tmp_path / "curve.png",
        {"overall": torch.rand(40)},
        threshold=np.linspace(0.5, 0.8, 40),
        alarm_step=None,
        success=None,
        title="",
    )
    assert iio.imread(per_step).ndim == 3


def test_plot_timeline_rejects_empty_and_bad_scores(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        plot_timeline(tmp_path / "x.png", {}, None, None, None, "t")
    with pytest.raises(ValueError, match="1-D"):
        plot_timeline(tmp_path / "x.png", {"overall": np.zeros((3, 3))}, None, None, True, "t")


def test_plot_success_vs_failure_with_both_and_one_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    eps = [(rng.random(30), True), (rng.random(20), True), (rng.random(45) + 1, False)]
    both = plot_success_vs_failure(tmp_path / "both.png", eps, threshold=0.9)
    only_ok = plot_success_vs_failure(tmp_path / "ok.png", eps[:2])
    only_fail = plot_success_vs_failure(tmp_path / "fail.png", eps[2:], threshold=np.ones(45))
    for p in (both, only_ok, only_fail):
        assert p.stat().st_size > 0 and iio.imread(p).ndim == 3
    assert (iio.imread(both) != iio.imread(only_ok)).any()
    with pytest.raises(ValueError, match="empty"):
        plot_success_vs_failure(tmp_path / "none.png", [])


def test_group_mean_averages_only_running_episodes() -> None:
    mean = _group_mean([np.array([1.0, 2.0, 3.0]), np.array([3.0])])
    np.testing.assert_allclose(mean, [2.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- video


def test_write_overlay_video_puts_cameras_side_by_side(tmp_path: Path) -> None:
    t = 5
    frames = {
        "agentview": np.stack([_frame(30, 45)] * t),  # odd width: 45 + 40 = 85 -> padded to 86
        "wrist": [_frame(30, 40)] * t,
    }
    maps = {"agentview": np.stack([_left_hot()] * t), "wrist": torch.zeros(t, 8, 8)}
    path = write_overlay_video(tmp_path / "vid" / "ep.mp4", frames, maps, fps=10)
    video = iio.imread(path, plugin="pyav")
    assert video.shape == (t, 30, 86, 3)
    # Lossy, but the hot left of agentview is clearly redder than the untinted wrist view.
    first = video[0].astype(int)
    assert first[:, :5, 0].mean() > first[:, 50:80, 0].mean() + 30


def test_write_overlay_video_rejects_mismatches(tmp_path: Path) -> None:
    frames = {"a": np.stack([_frame(16, 16)] * 3), "b": np.stack([_frame(16, 16)] * 4)}
    maps = {"a": np.zeros((3, 8, 8)), "b": np.zeros((4, 8, 8))}
    with pytest.raises(ValueError, match="different numbers of steps"):
        write_overlay_video(tmp_path / "x.mp4", frames, maps)
    with pytest.raises(ValueError, match="4 frames but 3 maps"):
        write_overlay_video(tmp_path / "x.mp4", frames, {"a": maps["a"], "b": maps["a"]})
    with pytest.raises(ValueError, match=r"only in maps \['c'\]"):
        write_overlay_video(tmp_path / "x.mp4", frames, {**maps, "c": maps["a"]})
    bad = {"a": [_frame(16, 16), _frame(16, 16).astype(np.float32), _frame(16, 16)]}
    with pytest.raises(ValueError, match="uint8"):
        write_overlay_video(tmp_path / "x.mp4", bad, {"a": maps["a"]})
    assert not (tmp_path / "x.mp4").exists()


# ----------------------------------------------------------------------------- wandb


class _FakeRun:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def log(self, data: dict) -> None:
        self.calls.append(data)


def test_log_to_wandb_without_run_does_nothing(tmp_path: Path) -> None:
    log_to_wandb(None, {"img": tmp_path / "missing.png"}, {"vid": tmp_path / "missing.mp4"})


def test_log_to_wandb_logs_images_and_videos_once(tmp_path: Path) -> None:
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed; log_to_wandb's real path cannot run")
    import wandb

    png = tmp_path / "o.png"
    iio.imwrite(png, _frame(16, 16))
    mp4 = write_overlay_video(
        tmp_path / "v.mp4", {"a": [_frame(16, 16)] * 2}, {"a": np.zeros((2, 8, 8))}
    )
    run = _FakeRun()
    log_to_wandb(run, {"viz/overlay": png}, {"viz/video": mp4})
    assert len(run.calls) == 1
    assert set(run.calls[0]) == {"viz/overlay", "viz/video"}
    assert isinstance(run.calls[0]["viz/overlay"], wandb.Image)
    assert isinstance(run.calls[0]["viz/video"], wandb.Video)
    with pytest.raises(FileNotFoundError, match="viz/missing"):
        log_to_wandb(run, {"viz/missing": tmp_path / "nope.png"})
    assert len(run.calls) == 1


def test_log_to_wandb_without_wandb_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match="needs the `wandb` package"):
        log_to_wandb(_FakeRun(), {})
