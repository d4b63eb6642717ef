"""Episode-level facts of a LeRobotDataset: success flags and the train/val/test split."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Written by vlaexp's collect stage beside LeRobot's own metadata: one JSON object per
# episode (episode_index, task_id, seed, success, failure_mode, perturbations, ...).
EPISODES_SIDECAR = Path("meta") / "vlaexp_episodes.jsonl"


def read_episode_records(root: str | Path) -> list[dict] | None:
    path = Path(root) / EPISODES_SIDECAR
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def episode_ranges(meta) -> dict[int, range]:
    """``{episode_index: range of its dataset indices}`` from a LeRobotDatasetMetadata."""
    table = meta.episodes
    return {
        int(e): range(int(a), int(b))
        for e, a, b in zip(
            table["episode_index"],
            table["dataset_from_index"],
            table["dataset_to_index"],
            strict=True,
        )
    }


def fault_frame(record: dict) -> int | None:
    """The frame a scripted expert's fault struck in an episode record of the sidecar: its
    ``expert_fault_step`` (the expert's action count then; 0 = from the start) as the frame of
    that action; None where none is recorded."""
    step = record.get("expert_fault_step")
    return None if step is None else max(int(step) - 1, 0)


def episode_success(root: str | Path, hf_dataset=None) -> dict[int, bool] | None:
    """``{episode_index: success}`` from the sidecar, else from the ``next.success`` column.

    Returns None when the dataset records neither (e.g. human teleoperation data).
    """
    records = read_episode_records(root)
    if records is not None:
        return {int(r["episode_index"]): bool(r["success"]) for r in records}
    if hf_dataset is not None and "next.success" in hf_dataset.column_names:
        eps = np.asarray(hf_dataset["episode_index"])
        succ = np.asarray(hf_dataset["next.success"]).reshape(len(eps), -1).any(axis=1)
        return {int(e): bool(succ[eps == e].any()) for e in np.unique(eps)}
    return None


def split_episodes(
    episodes: Sequence[int], fractions: Sequence[float], seed: int
) -> dict[str, list[int]]:
    """Shuffle episode indices with ``seed`` and cut them train/val/test by ``fractions``.

    Whole episodes go to one split, so overlapping action chunks never straddle splits.
    Every non-zero fraction gets at least one episode when there are enough episodes.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"data.split must be 3 non-negative fractions summing to 1, got {list(fractions)}"
        )
    order = [int(e) for e in np.random.default_rng(seed).permutation(sorted(episodes))]
    n = len(order)
    n_val = round(n * fractions[1]) if n >= 3 else 0
    n_test = round(n * fractions[2]) if n >= 3 else 0
    n_val = max(n_val, 1 if fractions[1] > 0 and n >= 3 else 0)
    n_test = max(n_test, 1 if fractions[2] > 0 and n >= 3 else 0)
    n_train = n - n_val - n_test
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def episode_outcomes(meta, hf_dataset=None) -> list[dict]:
    """Per episode ``{"episode_index", "task", "length", "success", "fault_frame",
    "action_noise"}`` (what value labels are made of): the task text and frame count from
    LeRobot's episode table, the success flag from :func:`episode_success` (None where the
    dataset records none), and from the sidecar the frame at which a scripted expert's fault
    struck and the std of the noise its recorded actions got (each None if unrecorded)."""
    table = meta.episodes
    success = episode_success(meta.root, hf_dataset) or {}
    records = read_episode_records(meta.root) or []
    faults = {int(r["episode_index"]): fault_frame(r) for r in records}
    noise = {int(r["episode_index"]): r.get("expert_action_noise") for r in records}
    out = []
    for e, tasks, a, b in zip(
        table["episode_index"],
        table["tasks"],
        table["dataset_from_index"],
        table["dataset_to_index"],
        strict=True,
    ):
        out.append(
            {
                "episode_index": int(e),
                "task": tasks[0] if isinstance(tasks, list | tuple) else tasks,
                "length": int(b) - int(a),
                "success": success.get(int(e)),
                "fault_frame": faults.get(int(e)),
                "action_noise": noise.get(int(e)),
            }
        )
    return out


def frame_columns(root: str | Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """float32[n_frames, d] per key, read from the dataset's parquet files (no images decoded);
    None when its data files are not on disk (a hub dataset whose frames are not fetched yet)."""
    import pyarrow.parquet as pq

    files = sorted((Path(root) / "data").glob("**/*.parquet"))
    if not files:
        return None
    tables = [pq.read_table(f, columns=list(keys)) for f in files]
    return {
        k: np.concatenate(
            [np.stack(t.column(k).to_numpy(zero_copy_only=False)) for t in tables]
        ).astype(np.float32)
        for k in keys
    }


def with_frame_quantiles(stats: dict, values: np.ndarray) -> dict:
    """``stats`` with q01 / q99 replaced by the 1% / 99% quantiles of ``values`` [n, d].

    LeRobot's meta/stats.json holds, for each quantile, the frame-weighted mean of the
    episodes' own quantiles (``aggregate_feature_stats``), not the dataset's: where episodes
    cover different ranges it is far narrower. In 24 expert episodes of tabletop_spatial
    tasks 0-1, 46% (TCP x) and 77% (TCP y) of all frames lie outside that q01..q99, so
    quantile normalization (Pi0.5's) clips them, and its discretized state reads them as bins
    -1 / 255 (openpi's norm stats are histograms over every frame: the dataset's quantiles,
    as here)."""
    q01, q99 = np.quantile(values.astype(np.float64), [0.01, 0.99], axis=0)
    return {**stats, "q01": q01.astype(np.float32), "q99": q99.astype(np.float32)}
