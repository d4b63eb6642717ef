"""Scoring rollouts with RND, at runtime (a SimRunner monitor) and offline (recorded episodes).

Every step, all of each camera's tokens go through that camera's RND in one batched pass
(all running envs at once). One file per episode, ``<out>/<suite>_<task>/
episode_{index:05d}_uncertainty.pt``::

    {"rollout_steps": [{"step": 0, "uncertainty": {"overall": float, "<camera>": float, ...,
                        "spatial_maps": {"<camera>": float32[g, g]}}}, ...],
     "metadata": {"episode_index", "task_id", "task", "seed", "success", "failure_mode",
                  "num_steps", "cameras", "grid", "split", "source"}}

(``spatial_maps`` only when maps are kept). Camera frames of the first episodes of each task
are kept beside it (``episode_{index:05d}_frames.npz``, uint8[T, H, W, 3] per camera) for overlays.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaexp.uncertainty.rnd import RND, FoldedRND, camera_scores, spatial_map

SCORES_GLOB = "*/episode_*_uncertainty.pt"


def episode_path(out_dir: Path, group: str, episode_index: int, kind: str = "uncertainty") -> Path:
    suffix = "pt" if kind == "uncertainty" else "npz"
    return Path(out_dir) / group / f"episode_{episode_index:05d}_{kind}.{suffix}"


@torch.no_grad()
def vision_inputs(
    policy: Any, batch: dict[str, Any], models: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """What ``models`` read from the policy: its vision tokens, or the vision tower's
    features before the projector where the projector is folded into them (:class:`FoldedRND`)."""
    folded = {isinstance(m, FoldedRND) for m in models.values()}
    if len(folded) > 1:
        raise ValueError("the RNDs of one run either all read features or all read tokens")
    return policy.vision_tokens(batch, project=not folded.pop())


@torch.no_grad()
def score_tokens(
    models: dict[str, RND], tokens: dict[str, torch.Tensor], maps: bool, parallel: bool = True
) -> list[dict[str, Any]]:
    """Per-env step records from camera tokens float[B, N, d] (one batched pass per camera,
    the cameras side by side on a CPU unless ``parallel`` is off: :func:`camera_scores`):
    ``[{camera: mean score, 'overall': mean over cameras, 'spatial_maps': {...}}] * B``."""
    per_cam = camera_scores(models, tokens, parallel)  # [B, N] each
    n = next(iter(per_cam.values())).shape[0]
    records = []
    for b in range(n):
        rec: dict[str, Any] = {cam: float(s[b].mean()) for cam, s in per_cam.items()}
        rec["overall"] = float(np.mean([rec[c] for c in per_cam]))
        if maps:
            rec["spatial_maps"] = {cam: spatial_map(s[b]).clone() for cam, s in per_cam.items()}
        records.append(rec)
    return records


class EpisodeScoreWriter:
    """Accumulates step records per episode and writes one file per finished episode."""

    def __init__(self, out_dir: str | Path, cameras: list[str], keep_frames: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.cameras = list(cameras)
        self.keep_frames = keep_frames
        self.steps: dict[int, list[dict[str, Any]]] = {}
        self.frames: dict[int, dict[str, list[np.ndarray]]] = {}
        self.kept_per_group: dict[str, int] = {}
        self.written: list[Path] = []

    def add(
        self, episode_index: int, record: dict[str, Any], images: dict[str, np.ndarray] | None
    ) -> None:
        steps = self.steps.setdefault(episode_index, [])
        steps.append({"step": len(steps), "uncertainty": record})
        if images is not None and episode_index in self.frames:
            for cam in self.cameras:
                self.frames[episode_index][cam].append(np.asarray(images[cam], dtype=np.uint8))

    def want_frames(self, episode_index: int, group: str) -> None:
        """Keep this episode's frames if its group has fewer than ``keep_frames`` so far."""
        if episode_index in self.frames or self.keep_frames <= 0:
            return
        if self.kept_per_group.get(group, 0) < self.keep_frames:
            self.kept_per_group[group] = self.kept_per_group.get(group, 0) + 1
            self.frames[episode_index] = {cam: [] for cam in self.cameras}

    def finish(self, episode_index: int, group: str, metadata: dict[str, Any]) -> Path:
        steps = self.steps.pop(episode_index, [])
        grid = None
        if steps and "spatial_maps" in steps[0]["uncertainty"]:
            grid = int(next(iter(steps[0]["uncertainty"]["spatial_maps"].values())).shape[-1])
        meta = {
            **metadata,
            "episode_index": episode_index,
            "num_steps": len(steps),
            "cameras": self.cameras,
            "grid": grid,
        }
        path = episode_path(self.out_dir, group, episode_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"rollout_steps": steps, "metadata": meta}, tmp)
        tmp.replace(path)  # a crash never leaves a half-written episode file
        frames = self.frames.pop(episode_index, None)
        if frames and all(frames.values()):
            np.savez_compressed(
                episode_path(self.out_dir, group, episode_index, "frames"),
                **{cam: np.stack(f) for cam, f in frames.items()},
            )
        self.written.append(path)
        return path


class RNDMonitor:
    """A :class:`~vlaexp.sim.runner.StepMonitor` scoring every step of every rollout.

    Args:
        policy: the acting policy; its ``vision_tokens`` are what the RNDs read.
        models: camera -> trained :class:`RND` (on the policy's device).
        out_dir: where episode files go (``<suite>_<task>/episode_{index:05d}_uncertainty.pt``).
        suite_name: first part of each episode's group directory.
        split_of: episode row -> split name stored in the metadata ("calib", "val", "test").
        save_maps: keep each step's per-token maps.
        keep_frames: episodes per task whose camera frames are saved for overlays.
    """

    def __init__(
        self,
        policy: Any,
        models: dict[str, RND],
        out_dir: str | Path,
        suite_name: str,
        split_of: Callable[[dict[str, Any]], str] | None = None,
        save_maps: bool = True,
        keep_frames: int = 0,
        first_episode: int = 0,
        ood: bool = False,
    ) -> None:
        self.policy = policy
        self.models = models
        self.cameras = list(models)
        self.suite_name = suite_name
        self.split_of = split_of
        self.save_maps = save_maps
        self.writer = EpisodeScoreWriter(out_dir, self.cameras, keep_frames)
        self.first = first_episode  # the runner counts from 0 per pass; files never collide
        self.ood = ood
        self.seconds = 0.0
        self.n_steps = 0

    def group(self, task_id: int) -> str:
        return f"{self.suite_name}_{task_id}" + ("_ood" if self.ood else "")

    def on_step(
        self, episode_ixs: list[int], observations: list[dict[str, Any]], instructions: list[str]
    ) -> None:
        import time

        t0 = time.perf_counter()
        batch = self.policy.observations_to_batch(observations, instructions)
        tokens = vision_inputs(self.policy, batch, self.models)
        tokens = {cam: tokens[cam] for cam in self.cameras}
        records = score_tokens(self.models, tokens, self.save_maps)
        self.seconds += time.perf_counter() - t0
        self.n_steps += len(episode_ixs)
        for ix, obs, rec in zip(episode_ixs, observations, records, strict=True):
            self.writer.add(self.first + ix, rec, obs["images"])

    def want_frames(self, episode_index: int, task_id: int) -> None:
        """Keep the frames of this episode (its index in the files, ``first_episode`` added)."""
        self.writer.want_frames(episode_index, self.group(task_id))

    def on_episode_end(self, row: dict[str, Any]) -> None:
        meta = {
            "task_id": int(row["task_id"]),
            "task": row["instruction"],
            "seed": int(row["seed"]),
            "success": bool(row["success"]),
            "failure_mode": row["failure_mode"],
            "split": self.split_of(row) if self.split_of is not None else None,
            "source": "rollout",
            "ood": self.ood,
        }
        self.writer.finish(
            self.first + int(row["episode_ix"]), self.group(int(row["task_id"])), meta
        )

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / max(1, self.n_steps)


def load_episode_scores(path: str | Path) -> dict[str, Any]:
    """One episode file, checked: a file of another layout is an error naming it."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or "rollout_steps" not in data or "metadata" not in data:
        raise ValueError(f"{path} is not an episode uncertainty file (rollout_steps, metadata)")
    return data


def series(data: dict[str, Any], key: str = "overall") -> np.ndarray:
    """float[T] of one score (``overall`` or a camera) over an episode's steps."""
    steps = data["rollout_steps"]
    if steps and key not in steps[0]["uncertainty"]:
        have = sorted(k for k in steps[0]["uncertainty"] if k != "spatial_maps")
        raise KeyError(f"no score '{key}' in the episode file; it has {have}")
    return np.array([s["uncertainty"][key] for s in steps], dtype=np.float64)


def maps(data: dict[str, Any], camera: str) -> np.ndarray:
    """float[T, g, g] per-token maps of one camera (the file must have kept them)."""
    steps = data["rollout_steps"]
    if not steps or "spatial_maps" not in steps[0]["uncertainty"]:
        raise KeyError("this episode file kept no spatial maps (rnd.score.save_maps=false)")
    return np.stack([s["uncertainty"]["spatial_maps"][camera].numpy() for s in steps])
