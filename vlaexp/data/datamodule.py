"""LeRobotDataset -> policy batches, as a LightningDataModule.

Reads a LeRobotDataset (v3) from a local root or the hub, selects cameras, prepares images
(resize-with-pad, [-1, 1]), returns action chunks with padding masks, and splits by
episode. Normalization statistics come from the dataset's ``meta/stats.json``, its quantiles
from the frames themselves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset

from vlaexp.data.episodes import (
    episode_outcomes,
    episode_ranges,
    episode_success,
    frame_columns,
    split_episodes,
    with_frame_quantiles,
)
from vlaexp.data.transforms import prepare_images
from vlaexp.errors import ConfigError, MissingPathError, VlaexpError
from vlaexp.value.dataset import ValueLabels, frame_values

log = logging.getLogger(__name__)


def _lerobot():
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    return LeRobotDataset, LeRobotDatasetMetadata


# What a preload worker needs, imported once in the forkserver instead of in every worker
PRELOAD_MODULES = ["torch", "lerobot.datasets.lerobot_dataset", "vlaexp.data.datamodule"]


def preload_worker_context(num_workers: int, start_method: str = "forkserver"):
    """The multiprocessing context of the preload pass's workers (None without workers).

    Not fork: Lightning calls ``setup`` after CUDA (and pyarrow's thread pool) are up in this
    process, and forking a process with running threads can deadlock. ``spawn`` is safe but
    each worker imports torch, LeRobot and vlaexp anew: beside other jobs starting on a GPU
    machine that took ~120 s before the first batch (experiments/value_function). The
    forkserver is a fresh process that imports them once and forks each worker from itself:
    8 workers on this 2-core machine reach their first batch in 14 s instead of 62 (the whole
    pass 16 s instead of 70); with 2 workers on 2 cores the two are even (13 s)
    (benchmarks/bench_preload_start.py, results/preload_start*.md)."""
    if num_workers == 0:
        return None
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD_MODULES)  # read when the server starts
    return ctx


def open_metadata(repo_id: str | None, root: str | Path | None):
    """LeRobotDatasetMetadata from a local root (must exist) or the hub (needs network)."""
    _, meta_cls = _lerobot()
    if root is not None:
        root = Path(root).expanduser()
        if not (root / "meta" / "info.json").is_file():
            raise MissingPathError(
                "LeRobotDataset", root, "data.root", hint="Expected a dataset with meta/info.json."
            )
        return meta_cls(repo_id or f"local/{root.name}", root=root)
    if not repo_id:
        raise ConfigError("No dataset given: set data.root (local) or data.repo_id (hub)")
    try:
        return meta_cls(repo_id)
    except Exception as e:
        raise VlaexpError(
            f"Could not load dataset '{repo_id}' from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Offline, copy it to disk and set data.root to its directory."
        ) from e


# Dataset columns handed to the policy as they are when a dataset has them: the advantage
# labels of the value_advantage stage (advantage-conditioned Pi0.5).
PASSTHROUGH = ("advantage", "advantage_positive")


class PolicyDataset(Dataset):
    """Renames a LeRobotDataset's features to the policy's and prepares its images."""

    def __init__(
        self,
        dataset: Any,
        camera_keys: dict[str, str],
        image_size: int,
        state_key: str,
        action_key: str,
    ):
        self.dataset = dataset
        self.camera_keys = camera_keys
        self.image_size = image_size
        self.state_key = state_key
        self.action_key = action_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.dataset[idx]
        out = {
            f"observation.images.{cam}": prepare_images(item[key], self.image_size)
            for cam, key in self.camera_keys.items()
        }
        out["observation.state"] = item[self.state_key].float()
        out["action"] = item[self.action_key].float()
        out["action_is_pad"] = item[f"{self.action_key}_is_pad"]
        out["task"] = item["task"]
        out["episode_index"] = item["episode_index"]
        out["frame_index"] = item["frame_index"]
        for key in PASSTHROUGH:
            if key in item:
                out[key] = item[key]
        return out


class PreloadedDataset(Dataset):
    """A :class:`PolicyDataset` decoded once into memory, for datasets that fit in RAM.

    LeRobotDataset does real work per sample (decoding every camera's frame, querying the
    action chunk): on a few CPU cores that is ~100 samples/s, far below what a small policy
    consumes on a GPU. One parallel pass here stores the prepared samples; images as uint8
    of their [-1, 1] values, which is exact when the policy's image size is the dataset's
    (every pixel is k/255) and a rounding to 1/255 otherwise.
    """

    def __init__(self, source: PolicyDataset, num_workers: int, batch_size: int = 64) -> None:
        loader = DataLoader(
            source,
            batch_size=batch_size,
            num_workers=num_workers,
            multiprocessing_context=preload_worker_context(num_workers),
        )
        parts: dict[str, list[Any]] = {}
        total, done, next_report, started = len(source), 0, 0.0, time.time()
        for batch in loader:
            for key, value in batch.items():
                parts.setdefault(key, []).append(value)
            done += len(batch["action"])
            if done / total >= next_report:
                log.info("Preloading: %d/%d samples (%.0f s)", done, total, time.time() - started)
                next_report += 0.25
        self.data: dict[str, Any] = {}
        for key, chunks in parts.items():
            if key.startswith("observation.images."):
                to_uint8 = [
                    ((c + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8) for c in chunks
                ]
                self.data[key] = torch.cat(to_uint8)
            elif torch.is_tensor(chunks[0]):
                self.data[key] = torch.cat(chunks)
            else:  # task strings
                self.data[key] = [x for chunk in chunks for x in chunk]

    def __len__(self) -> int:
        return len(self.data["action"])

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {
            k: v[idx].float() / 127.5 - 1.0 if k.startswith("observation.images.") else v[idx]
            for k, v in self.data.items()
        }

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        """A whole batch by one gather per key (the DataLoader's batched fetch): a few tensor
        ops per batch instead of per sample, which matters when other processes share the
        CPU. Returned already collated (see :func:`collate_preloaded`)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out: dict[str, Any] = {}
        for k, v in self.data.items():
            if not torch.is_tensor(v):
                out[k] = [v[i] for i in indices]
            elif k.startswith("observation.images."):
                out[k] = v[idx].float().div_(127.5).sub_(1.0)
            else:
                out[k] = v[idx]
        return out

    def slice(self, start: int, stop: int) -> PreloadedDataset:
        """Samples ``start:stop`` as a dataset of their own (views of these tensors)."""
        part = object.__new__(PreloadedDataset)
        part.data = {k: v[start:stop] for k, v in self.data.items()}
        return part


def preload_together(sources: list[Dataset], num_workers: int) -> list[PreloadedDataset]:
    """One :class:`PreloadedDataset` per source, decoded in a single pass. Each pass starts
    its workers anew, and beside other jobs on a GPU machine spawning them cost ~130 s
    before the first batch while the decoding itself took ~15 s (experiments/value_function:
    a value run started six passes, ~13 of its ~21 minutes; the workers start from a
    forkserver now, :func:`preload_worker_context`)."""
    whole = PreloadedDataset(ConcatDataset(sources), num_workers)
    parts, start = [], 0
    for source in sources:
        parts.append(whole.slice(start, start + len(source)))
        start += len(source)
    return parts


def collate_preloaded(batch: dict[str, Any]) -> dict[str, Any]:
    """The collate function of :class:`PreloadedDataset` loaders: its batches come collated."""
    return batch


class LeRobotDataModule(pl.LightningDataModule):
    """Train/val/test DataLoaders over one LeRobotDataset, split by episode.

    Args:
        cameras: policy camera names; each must be in ``camera_keys``.
        camera_keys: camera name -> dataset image feature.
        chunk_size: actions per sample (``action`` is float[chunk_size, action_dim]).
        image_size: side of the prepared square images.
        split: train/val/test fractions of episodes; ``split_seed`` shuffles episodes.
        train_success_only: drop failed episodes from train and val (kept in test).
        preload: decode the train and val splits into memory once
            (:class:`PreloadedDataset`); their loaders then read memory in the main process.
        value_labels: add each frame's ``value`` (``vlaexp.value.labels``, normalized
            time-to-go with the failure penalty ``value_c_fail``) for training a value
            function; failed episodes then stay in every split whatever
            ``train_success_only`` says, since the value function learns from them.
    """

    def __init__(
        self,
        repo_id: str | None,
        root: str | Path | None,
        cameras: list[str],
        camera_keys: dict[str, str],
        chunk_size: int,
        image_size: int,
        state_key: str = "observation.state",
        action_key: str = "action",
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        train_success_only: bool = True,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = True,
        video_backend: str | None = None,
        preload: bool = False,
        value_labels: bool = False,
        value_c_fail: float | None = None,
        value_n_bins: int = 201,
        frame_history: list[int] | tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        missing = [c for c in cameras if c not in camera_keys]
        if missing:
            raise ConfigError(
                f"No dataset key for camera(s) {missing}: add data.camera_keys.<camera> "
                f"(known: {sorted(camera_keys)})"
            )
        self.repo_id, self.root = repo_id, root
        self.camera_keys = {c: camera_keys[c] for c in cameras}
        self.chunk_size, self.image_size = chunk_size, image_size
        self.state_key, self.action_key = state_key, action_key
        self.split, self.split_seed = tuple(split), split_seed
        self.train_success_only = train_success_only
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.preload = preload
        self.value_labels = value_labels
        self.value_c_fail, self.value_n_bins = value_c_fail, value_n_bins
        # steps back of each camera's earlier frames (a value function's policy.frame_history):
        # its images then come as float[T, 3, S, S], the oldest first and the current frame last
        self.frame_history = sorted({int(k) for k in frame_history}, reverse=True)
        # torchcodec needs system FFmpeg libraries; PyAV ships its own, so it works anywhere.
        self.video_backend = video_backend or "pyav"
        self.meta = open_metadata(repo_id, root)
        self._check_features()
        self._stats: dict[str, dict[str, Any]] | None = None
        self.splits: dict[str, list[int]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.outcomes: dict[int, dict] = {}  # per episode, with value labels

    def _check_features(self) -> None:
        features = self.meta.features
        for cam, key in self.camera_keys.items():
            if key not in features:
                images = [k for k, v in features.items() if v["dtype"] in ("image", "video")]
                raise ConfigError(
                    f"Dataset has no image feature '{key}' (data.camera_keys.{cam}); it has {images}"
                )
        for name, key in (("data.state_key", self.state_key), ("data.action_key", self.action_key)):
            if key not in features:
                raise ConfigError(
                    f"Dataset has no feature '{key}' ({name}); it has {sorted(features)}"
                )

    @property
    def fps(self) -> int:
        return self.meta.fps

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Statistics under the policy's feature names (``observation.state``, ``action``):
        the dataset's, with q01 / q99 computed over every frame when its data files are on
        disk (:func:`with_frame_quantiles`: LeRobot's aggregate is a mean of per-episode ones)."""
        if self._stats is None:
            keys = {"observation.state": self.state_key, "action": self.action_key}
            stats = {name: dict(self.meta.stats[key]) for name, key in keys.items()}
            columns = frame_columns(self.meta.root, list(keys.values()))
            if columns is None:
                log.warning(
                    "%s: no data files on disk yet, q01/q99 are LeRobot's per-episode means",
                    self.meta.repo_id,
                )
            else:
                for name, key in keys.items():
                    stats[name] = with_frame_quantiles(stats[name], columns[key])
            self._stats = stats
        return self._stats

    def feature_dim(self, key: str) -> int:
        return int(self.meta.features[key]["shape"][0])

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        dataset_cls, _ = _lerobot()
        episodes = list(range(self.meta.total_episodes))
        self.splits = split_episodes(episodes, self.split, self.split_seed)
        # One LeRobotDataset over every episode, cut into splits by frame ranges. Opening one
        # per split (its `episodes` argument) makes LeRobot 0.4.4 build an index map by
        # iterating a column through the torch transform, which decodes every image of the
        # split: seconds for 5k frames on an idle machine, ~4 minutes beside another job.
        deltas = {self.action_key: [i / self.fps for i in range(self.chunk_size)]}
        if self.frame_history:
            # LeRobot clamps each query to the sample's episode: before the episode's start,
            # its first frame stands in for the earlier ones
            frames = [-k / self.fps for k in self.frame_history] + [0.0]
            deltas |= {key: frames for key in self.camera_keys.values()}
        full = dataset_cls(
            self.meta.repo_id,
            root=self.meta.root,
            delta_timestamps=deltas,
            video_backend=self.video_backend,
        )
        values = None
        if self.value_labels:
            outcomes = episode_outcomes(self.meta, full.hf_dataset)
            values = frame_values(outcomes, self.value_c_fail, self.value_n_bins)
            self.outcomes = {o["episode_index"]: o for o in outcomes}
            log.info("Value labels: failed episodes kept in every split")
        elif self.train_success_only:
            success = episode_success(self.meta.root, full.hf_dataset)
            if success is not None:
                for name in ("train", "val"):
                    self.splits[name] = [e for e in self.splits[name] if success.get(e, False)]
        if not self.splits["train"]:
            raise VlaexpError(
                f"No training episodes in {self.meta.root} after the split/success filter"
            )
        for name, eps in self.splits.items():
            if eps:
                frames = Subset(full, self._frame_indices(eps))
                self.datasets[name] = PolicyDataset(
                    frames, self.camera_keys, self.image_size, self.state_key, self.action_key
                )
                if values is not None:
                    self.datasets[name] = ValueLabels(self.datasets[name], values)
        if self.preload:
            # training reads train and val; a value function's evaluation and advantage
            # stages read every split (the test split too: value_eval, value_advantage)
            names = [n for n in self.datasets if n != "test" or values is not None]
            loaded = preload_together([self.datasets[n] for n in names], self.num_workers)
            self.datasets.update(zip(names, loaded, strict=True))
        log.info("Episodes: %s", {k: len(v) for k, v in self.splits.items()})

    def _frame_indices(self, episodes: list[int]) -> list[int]:
        """Dataset indices of the frames of ``episodes``, in episode order."""
        ranges = episode_ranges(self.meta)
        return [i for e in sorted(episodes) for i in ranges[e]]

    def _train_sampler(self) -> DistributedSampler:
        """The training order: one seeded permutation of the frames per epoch (the run's
        seed), dealt to the ranks in turn. The global batch of step k then holds the same
        frames on one device with batch N x B as on N devices with batch B, so a run's data
        order does not depend on how many devices it uses. (Lightning's own replacement
        sampler would do the dealing, but a single device gets a RandomSampler with another
        order; and Lightning leaves a DistributedSampler in place, so ranks come from here.)"""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return DistributedSampler(
            self.datasets["train"],
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # set by seed_everything
        )

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        preloaded = isinstance(self.datasets[name], PreloadedDataset)
        workers = 0 if preloaded else self.num_workers  # memory needs no workers
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size,
            sampler=self._train_sampler() if shuffle else None,
            num_workers=workers,
            collate_fn=collate_preloaded if preloaded else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=shuffle and len(self.datasets[name]) > self.batch_size,
        )

    def split_dataloader(self, name: str) -> DataLoader:
        """Every sample of one split (``train``, ``val`` or ``test``) in order, preloaded or not."""
        return self._loader(name, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", shuffle=False) if "test" in self.datasets else []


def datamodule_from_config(
    data_cfg: Any, policy_cfg: Any, collected_root: Path | None = None
) -> LeRobotDataModule:
    """The DataModule of a run: ``data`` settings, the policy's cameras/chunk/image size.

    With ``data.source=collect`` the dataset is the one the collect stage recorded
    (``collected_root``); with ``data.source=lerobot`` it is ``data.root`` or ``data.repo_id``.
    """
    if data_cfg.source == "collect":
        if collected_root is None:
            raise ConfigError(
                "data.source=collect needs the `collect` stage to run first (add it to `stages`), "
                "or use data=lerobot with data.root / data.repo_id"
            )
        repo_id, root = None, collected_root
    elif data_cfg.source == "lerobot":
        repo_id, root = data_cfg.repo_id, data_cfg.root
    else:
        raise ConfigError(f"data.source must be 'collect' or 'lerobot', got '{data_cfg.source}'")
    value_fn = policy_cfg.type == "value_fn"
    return LeRobotDataModule(
        repo_id=repo_id,
        root=root,
        cameras=list(policy_cfg.cameras),
        camera_keys=dict(data_cfg.camera_keys),
        chunk_size=1 if value_fn else policy_cfg.chunk_size,
        image_size=policy_cfg.image_size,
        state_key=data_cfg.state_key,
        action_key=data_cfg.action_key,
        split=tuple(data_cfg.split),
        split_seed=data_cfg.split_seed,
        train_success_only=data_cfg.train_success_only,
        batch_size=data_cfg.batch_size,
        num_workers=data_cfg.num_workers,
        pin_memory=data_cfg.pin_memory,
        video_backend=data_cfg.video_backend,
        preload=data_cfg.preload,
        value_labels=value_fn,
        value_c_fail=policy_cfg.c_fail if value_fn else None,
        value_n_bins=policy_cfg.n_bins if value_fn else 201,
        frame_history=list(getattr(policy_cfg, "frame_history", None) or []) if value_fn else [],
    )
