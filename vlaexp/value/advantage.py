"""Advantages from a value function, RECAP-style, written into a derived LeRobotDataset.

The rewards are the ones the value labels imply (:mod:`vlaexp.value.labels`): with
``label_t`` the normalized negative time-to-go of frame ``t`` and ``label_T = 0`` past the
end, ``r_t = label_t - label_{t+1}``, so N rewards from ``t`` sum to ``label_t - label_{t+N}``
(``-N / max length`` inside a successful episode; the failure penalty in the last step of
a failed one). The N-step advantage is

    A_t = sum_{k=t}^{t+N-1} r_k + V(s_{t+N}) - V(s_t)        (bootstrap 0 past the end)

and the Monte-Carlo one (``horizon=None``) ``A_t = label_t - V(s_t)``. Per task, a threshold
epsilon is the quantile of the task's advantages that leaves ``positive_fraction`` (30%) of
its frames at or above it: those frames are ``advantage_positive``.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlaexp.errors import ConfigError, VlaexpError

ADVANTAGE = "advantage"
POSITIVE = "advantage_positive"


def n_step_advantages(labels: np.ndarray, predicted: np.ndarray, horizon: int | None) -> np.ndarray:
    """float[T] advantages of one episode from its value labels and predicted values."""
    labels = np.asarray(labels, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predicted.shape} must be [T]")
    if horizon is not None and horizon < 1:
        raise ConfigError(f"policy.advantage_horizon must be >= 1 or null, got {horizon}")
    advantage = labels - predicted  # Monte-Carlo, and N-step where t + N is past the end
    if horizon is not None:
        ahead = np.arange(len(labels)) + horizon
        inside = ahead < len(labels)
        advantage[inside] += predicted[ahead[inside]] - labels[ahead[inside]]
    return advantage


def positive_thresholds(
    advantages: Mapping[str, np.ndarray], positive_fraction: float = 0.3
) -> dict[str, float]:
    """Per task, the advantage at or above which ``positive_fraction`` of its frames lie."""
    if not 0.0 < positive_fraction < 1.0:
        raise ConfigError(
            f"policy.advantage_positive_fraction must be in (0, 1), got {positive_fraction}"
        )
    return {
        task: float(np.quantile(np.asarray(a, dtype=np.float64), 1.0 - positive_fraction))
        for task, a in advantages.items()
    }


def positive_labels(
    advantages: Mapping[int, np.ndarray],
    tasks: Mapping[int, str],
    positive_fraction: float = 0.3,
    thresholds: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[int, np.ndarray]]:
    """(per-task thresholds, per-episode bool[T] ``advantage_positive``) of episodes'
    advantages: the thresholds set over each task's frames (:func:`positive_thresholds`), or
    the ``thresholds`` given (e.g. a run's, applied to other frames)."""
    if thresholds is None:
        by_task: dict[str, list[np.ndarray]] = defaultdict(list)
        for ep, adv in advantages.items():
            by_task[tasks[ep]].append(np.asarray(adv, dtype=np.float64))
        thresholds = positive_thresholds(
            {t: np.concatenate(a) for t, a in by_task.items()}, positive_fraction
        )
    positive = {ep: np.asarray(adv) >= thresholds[tasks[ep]] for ep, adv in advantages.items()}
    return dict(thresholds), positive


def positive_by_outcome(
    positive: Mapping[int, np.ndarray],
    success: Mapping[int, bool],
    fault_frames: Mapping[int, int | None],
) -> dict[str, float | None]:
    """The share of frames labelled positive among successes' frames, failures' frames before
    their scripted fault, after it (from the fault frame on), and failures whose fault frame is
    unknown. Conditioning filters the degraded demos only where the frames after a fault are
    rarely positive; None where a group has no frames."""
    groups: dict[str, list[np.ndarray]] = {
        "successes": [],
        "failures_before_fault": [],
        "failures_after_fault": [],
        "failures_fault_unknown": [],
    }
    for ep, pos in positive.items():
        pos = np.asarray(pos, dtype=bool)
        fault = fault_frames.get(ep)
        if success[ep]:
            groups["successes"].append(pos)
        elif fault is None:
            groups["failures_fault_unknown"].append(pos)
        else:
            groups["failures_before_fault"].append(pos[:fault])
            groups["failures_after_fault"].append(pos[fault:])
    out: dict[str, float | None] = {}
    for name, parts in groups.items():
        frames = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
        out[name] = float(frames.mean()) if len(frames) else None
    return out


def positive_by_group(
    positive: Mapping[int, np.ndarray], groups: Mapping[int, Any]
) -> dict[str, float]:
    """The share of frames labelled positive per group of episodes (``groups``: episode ->
    its group, e.g. the std of the noise its recorded actions got; episodes mapped to None are
    left out), keyed by the group's text, in sorted order."""
    frames = frames_by_group(positive, groups)
    return {g: float(f.astype(bool).mean()) for g, f in frames.items()}


def frames_by_group(
    per_episode: Mapping[int, Any], groups: Mapping[int, Any]
) -> dict[str, np.ndarray]:
    """Per-frame values of each episode (``per_episode``: episode -> float[T]) pooled per group
    of episodes (``groups``: episode -> its group; episodes mapped to None are left out),
    keyed by the group's text, in sorted order."""
    frames: dict[Any, list[np.ndarray]] = defaultdict(list)
    for ep, values in per_episode.items():
        if groups.get(ep) is not None:
            frames[groups[ep]].append(np.asarray(values, dtype=float))
    return {str(g): np.concatenate(frames[g]) for g in sorted(frames)}


def positive_by_progress(
    positive: Mapping[int, np.ndarray], success: Mapping[int, bool], n_bins: int = 10
) -> list[float | None]:
    """The share of successes' frames labelled positive in each of ``n_bins`` equal parts of
    their episodes (frame ``t`` of ``T`` in part ``t * n_bins // T``). A flat profile means the
    indicator says "this is a good episode" in every phase; a rising one makes "positive" a
    cue for the late phases and leaves few positive frames of the early ones to imitate (the
    N-step labels of experiments/value_function: 0.14 in the first tenth, 0.79 in the fifth).
    None for a part without frames."""
    hits, counts = np.zeros(n_bins), np.zeros(n_bins)
    for ep, pos in positive.items():
        if not success[ep] or len(pos) == 0:
            continue
        part = np.arange(len(pos)) * n_bins // len(pos)
        np.add.at(hits, part, np.asarray(pos, dtype=bool))
        np.add.at(counts, part, 1)
    return [float(h / c) if c else None for h, c in zip(hits, counts, strict=True)]


def write_advantage_dataset(
    src: str | Path,
    dst: str | Path,
    advantages: Mapping[int, np.ndarray],
    positive: Mapping[int, np.ndarray],
) -> Path:
    """A copy of the LeRobotDataset at ``src`` with ``advantage`` (float32) and
    ``advantage_positive`` (bool) columns, one value per frame, declared in ``info.json``
    (and the parquet files' own feature metadata) so LeRobotDataset loads them like any
    feature. Every frame of ``src`` needs a value. (LeRobot has no call that adds a column
    to a recorded dataset; its on-disk format is plain parquet, so pyarrow does it here.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise VlaexpError(f"{dst} already exists: the derived dataset is never overwritten")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    try:
        for path in sorted((tmp / "data").rglob("*.parquet")):
            table = pq.read_table(path)
            episodes = table["episode_index"].to_numpy()
            frames = table["frame_index"].to_numpy()
            try:
                adv = np.array([advantages[e][f] for e, f in zip(episodes, frames, strict=True)])
                pos = np.array([positive[e][f] for e, f in zip(episodes, frames, strict=True)])
            except (KeyError, IndexError):
                raise VlaexpError(
                    f"{path}: frames without an advantage (episodes differ?)"
                ) from None
            for name in (ADVANTAGE, POSITIVE):
                if name in table.column_names:
                    table = table.drop_columns([name])
            table = table.append_column(ADVANTAGE, pa.array(adv.astype(np.float32)))
            table = table.append_column(POSITIVE, pa.array(pos.astype(bool)))
            meta = dict(table.schema.metadata or {})
            if b"huggingface" in meta:  # datasets' own copy of the features
                hf = json.loads(meta[b"huggingface"])
                feats = hf.setdefault("info", {}).setdefault("features", {})
                feats[ADVANTAGE] = {"dtype": "float32", "_type": "Value"}
                feats[POSITIVE] = {"dtype": "bool", "_type": "Value"}
                meta[b"huggingface"] = json.dumps(hf).encode()
            pq.write_table(table.replace_schema_metadata(meta), path)
        info_path = tmp / "meta" / "info.json"
        info = json.loads(info_path.read_text())
        info["features"][ADVANTAGE] = {"dtype": "float32", "shape": [1], "names": None}
        info["features"][POSITIVE] = {"dtype": "bool", "shape": [1], "names": None}
        info_path.write_text(json.dumps(info, indent=4))
        stats_path = tmp / "meta" / "stats.json"
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            all_adv = np.concatenate([np.asarray(a, dtype=np.float64) for a in advantages.values()])
            stats[ADVANTAGE] = {
                "min": [float(all_adv.min())],
                "max": [float(all_adv.max())],
                "mean": [float(all_adv.mean())],
                "std": [float(all_adv.std())],
                "count": [int(all_adv.size)],
            }
            stats_path.write_text(json.dumps(stats, indent=4))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written survives
        raise
    tmp.rename(dst)
    return dst
