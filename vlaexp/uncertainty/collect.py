"""Vision tokens of recorded episodes: token stores from demonstrations (RND training data)
and offline scoring of recorded rollouts.

Both read a LeRobotDataset frame by frame through the policy's own image preparation
(:func:`vlaexp.data.transforms.prepare_images`) and its ``vision_tokens`` tap, so the tokens
are exactly those the policy sees when it acts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from vlaexp.data.datamodule import open_metadata
from vlaexp.data.episodes import episode_ranges, episode_success
from vlaexp.data.transforms import prepare_images
from vlaexp.errors import ConfigError, VlaexpError
from vlaexp.policies.base import image_key
from vlaexp.uncertainty.monitor import EpisodeScoreWriter, score_tokens, vision_inputs
from vlaexp.uncertainty.tokens import TokenStoreWriter, sample_tokens

log = logging.getLogger(__name__)

SUMMARY = "summary.json"


def read_summary(stores: Path) -> dict[str, Any]:
    path = Path(stores) / SUMMARY
    if not path.is_file():
        raise VlaexpError(f"{stores} holds no finished token stores (no {SUMMARY})")
    return json.loads(path.read_text())


def _open(repo_id: str | None, root: Path | None, video_backend: str | None) -> Any:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta = open_metadata(repo_id, root)
    return LeRobotDataset(meta.repo_id, root=meta.root, video_backend=video_backend or "pyav")


def _open_scored(
    repo_id: str | None,
    root: Path | None,
    video_backend: str | None,
    camera_keys: dict[str, str],
    cameras: list[str],
    why: str,
) -> tuple[Any, dict[int, bool]]:
    """The dataset, its cameras checked, and ``{episode: success}`` (an error saying ``why``
    the flag is needed when the dataset has none)."""
    dataset = _open(repo_id, root, video_backend)
    _check_cameras(dataset, camera_keys, cameras)
    success = episode_success(dataset.root, dataset.hf_dataset)
    if success is None:
        raise VlaexpError(
            f"{dataset.root} records no success flag (episodes sidecar or next.success): {why}"
        )
    return dataset, success


def _check_cameras(dataset: Any, camera_keys: dict[str, str], cameras: list[str]) -> None:
    for cam in cameras:
        key = camera_keys.get(cam)
        if key is None or key not in dataset.meta.features:
            raise ConfigError(
                f"camera '{cam}' has no image feature in {dataset.root} (data.camera_keys.{cam}="
                f"{key}); image features: "
                f"{sorted(k for k, v in dataset.meta.features.items() if v['dtype'] in ('image', 'video'))}"
            )


def _frames(
    dataset: Any,
    indices: list[int],
    camera_keys: dict[str, str],
    cameras: list[str],
    image_size: int,
    batch_frames: int,
) -> Iterator[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """(policy batch with prepared images, raw float[B, 3, H, W] frames per camera)."""

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "raw": {cam: torch.stack([it[camera_keys[cam]] for it in items]) for cam in cameras},
            "task": [it["task"] for it in items],
        }

    loader = DataLoader(Subset(dataset, indices), batch_size=batch_frames, collate_fn=collate)
    for b in loader:
        batch = {
            image_key(cam): prepare_images(raw.float(), image_size) for cam, raw in b["raw"].items()
        }
        batch["task"] = b["task"]
        yield batch, b["raw"]


def collect_demo_tokens(
    policy: Any,
    out: Path,
    repo_id: str | None,
    root: Path | None,
    camera_keys: dict[str, str],
    cameras: list[str],
    tokens_per_frame: int,
    seed: int,
    batch_frames: int = 32,
    video_backend: str | None = None,
) -> dict[str, Any]:
    """Token stores ``out/<camera>/`` from every frame of the dataset's successful episodes:
    ``tokens_per_frame`` of each camera's tokens per frame, drawn without replacement with a
    generator seeded by ``seed``. Returns (and writes as ``summary.json``) what was stored."""
    dataset, success = _open_scored(
        repo_id,
        root,
        video_backend,
        camera_keys,
        cameras,
        "RND trains on successful demonstrations only, so it cannot tell which to use",
    )
    ranges = episode_ranges(dataset.meta)
    episodes = sorted(e for e in ranges if success.get(e, False))
    if not episodes:
        raise VlaexpError(f"{dataset.root} has no successful episode to collect tokens from")
    indices = [i for e in episodes for i in ranges[e]]
    gen = torch.Generator().manual_seed(int(seed))
    writers: dict[str, TokenStoreWriter] = {}
    n_tokens = dim = 0
    k = tokens_per_frame
    device = policy.device
    for batch, _ in _frames(
        dataset, indices, camera_keys, cameras, policy.config.image_size, batch_frames
    ):
        batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
        tokens = policy.vision_tokens(batch)
        for cam in cameras:
            t = tokens[cam].cpu()
            n_tokens, dim = t.shape[1], t.shape[2]
            if cam not in writers:
                if k > n_tokens:
                    log.info("rnd.tokens_per_frame=%d > %d tokens per image: all kept", k, n_tokens)
                writers[cam] = TokenStoreWriter(out / cam, dim)
            for frame in t:
                writers[cam].append(sample_tokens(frame, min(k, n_tokens), gen))
    for w in writers.values():
        w.close()
    summary = {
        "task_type": out.name,
        "cameras": cameras,
        "dim": dim,
        "tokens_per_image": n_tokens,
        "tokens_per_frame": min(k, n_tokens),
        "frames": len(indices),
        "episodes": len(episodes),
        "dataset": str(dataset.root),
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    log.info(
        "Collected %d frames x %d tokens x %d cameras (%d-D) from %d successful episodes",
        len(indices),
        summary["tokens_per_frame"],
        len(cameras),
        dim,
        len(episodes),
    )
    return summary


def score_recorded_episodes(
    policy: Any,
    models: dict[str, Any],
    out: Path,
    repo_id: str | None,
    root: Path | None,
    camera_keys: dict[str, str],
    group: str,
    save_maps: bool = True,
    keep_frames: int = 2,
    batch_frames: int = 32,
    video_backend: str | None = None,
) -> list[Path]:
    """Score every frame of every episode of a recorded dataset (offline), writing the same
    episode files as runtime scoring (``source: "dataset"``; ``split`` from the metadata
    is None: the detect stage then splits by episode)."""
    cameras = list(models)
    dataset, success = _open_scored(
        repo_id,
        root,
        video_backend,
        camera_keys,
        cameras,
        "detection metrics need to know which episodes failed",
    )
    writer = EpisodeScoreWriter(out, cameras, keep_frames)
    for e, frames in sorted(episode_ranges(dataset.meta).items()):
        writer.want_frames(e, group)
        task = ""
        for batch, raw in _frames(
            dataset, list(frames), camera_keys, cameras, policy.config.image_size, batch_frames
        ):
            task = batch["task"][0]
            batch = {k: v.to(policy.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            records = score_tokens(models, vision_inputs(policy, batch, models), save_maps)
            images = {
                cam: (r.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                for cam, r in raw.items()
            }
            for i, rec in enumerate(records):
                writer.add(e, rec, {cam: images[cam][i] for cam in cameras})
        writer.finish(
            e,
            group,
            {
                "task_id": None,
                "task": task,
                "seed": None,
                "success": bool(success.get(e, False)),
                "failure_mode": None,
                "split": None,
                "source": "dataset",
            },
        )
    return writer.written
