"""Scripted demonstrations of a task suite, written with LeRobot's own dataset writer.

Each frame holds every camera (mp4 video or PNG), ``observation.state``, ``action``,
``next.reward`` / ``next.done`` / ``next.success`` (LeRobot's sim conventions) and the task
text. Per-episode facts (task id, seed, success, failure mode, perturbations, expert fault)
go to ``meta/vlaexp_episodes.jsonl`` (see :mod:`vlaexp.data.episodes`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vlaexp.data.episodes import EPISODES_SIDECAR
from vlaexp.sim.base import ACTION_DIM, STATE_DIM, TaskSuite
from vlaexp.sim.rollout import Episode, rollout

log = logging.getLogger(__name__)


def dataset_features(
    cameras: list[str], resolution: int, use_videos: bool
) -> dict[str, dict[str, Any]]:
    """LeRobotDataset feature spec of the LIBERO observation/action contract."""
    features: dict[str, dict[str, Any]] = {
        f"observation.images.{cam}": {
            "dtype": "video" if use_videos else "image",
            "shape": (resolution, resolution, 3),
            "names": ["height", "width", "channels"],
        }
        for cam in cameras
    }
    features["observation.state"] = {"dtype": "float32", "shape": (STATE_DIM,), "names": None}
    features["action"] = {"dtype": "float32", "shape": (ACTION_DIM,), "names": None}
    for key, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("next.success", "bool")):
        features[key] = {"dtype": dtype, "shape": (1,), "names": None}
    return features


class EpisodeRecorder:
    """Writes :class:`~vlaexp.sim.rollout.Episode` objects into a new LeRobotDataset.

    Used for scripted demonstrations and for policy rollouts alike, so both share one format.
    """

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        fps: int,
        cameras: list[str],
        resolution: int,
        use_videos: bool = True,
    ) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        self.dataset = LeRobotDataset.create(
            repo_id,
            fps=fps,
            features=dataset_features(cameras, resolution, use_videos),
            root=root,
            use_videos=use_videos,
        )
        self.records: list[dict[str, Any]] = []

    def add(self, ep: Episode, **metadata: Any) -> None:
        """Append one episode; ``metadata`` goes to its row in the episodes sidecar."""
        last = ep.steps - 1
        for i, (obs, action) in enumerate(zip(ep.observations, ep.actions, strict=True)):
            frame = {f"observation.images.{cam}": img for cam, img in obs["images"].items()}
            frame["observation.state"] = np.asarray(obs["state"], dtype=np.float32)
            frame["action"] = np.asarray(action, dtype=np.float32)
            frame["next.reward"] = np.array([ep.rewards[i]], dtype=np.float32)
            frame["next.done"] = np.array([i == last])
            frame["next.success"] = np.array([ep.success and i == last])
            frame["task"] = ep.instruction
            self.dataset.add_frame(frame)
        self.dataset.save_episode()
        self.records.append(
            {
                "episode_index": len(self.records),
                "task_id": ep.task_id,
                "instruction": ep.instruction,
                "seed": ep.seed,
                "success": ep.success,
                "length": ep.steps,
                **metadata,
            }
        )

    def finalize(self) -> Path:
        self.dataset.finalize()
        (self.root / EPISODES_SIDECAR).write_text(
            "".join(json.dumps(r) + "\n" for r in self.records)
        )
        return self.root


def collect_demonstrations(
    suite: TaskSuite,
    root: str | Path,
    repo_id: str,
    cameras: list[str],
    episodes_per_task: int,
    seed_offset: int = 0,
    use_videos: bool = True,
    keep_failures: bool = True,
    task_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Record ``episodes_per_task`` expert episodes of every task into a new dataset at ``root``.

    Seeds come from ``suite.train_seeds`` (disjoint from the evaluation seeds). Returns a
    summary: episodes written, successes, per-task expert success rate.
    """
    recorder = EpisodeRecorder(root, repo_id, suite.fps, cameras, suite.resolution, use_videos)
    per_task: dict[int, list[bool]] = {}
    perturbation = dataclasses.asdict(suite.perturbation) if hasattr(suite, "perturbation") else {}
    task_ids = list(suite.task_ids) if task_ids is None else list(task_ids)
    unknown = sorted(set(task_ids) - set(suite.task_ids))
    if unknown:
        raise ValueError(
            f"data.collect.task_ids {unknown} not in suite '{suite.name}' (valid: {suite.task_ids})"
        )
    for task_id in task_ids:
        with suite.make_env(task_id) as env:
            expert = suite.make_expert(env)
            for seed in suite.train_seeds(task_id, episodes_per_task, seed_offset):
                ep = rollout(env, expert.act, seed, after_reset=expert.reset)
                per_task.setdefault(task_id, []).append(ep.success)
                if not ep.success and not keep_failures:
                    continue
                recorder.add(
                    ep,
                    failure_mode=None if ep.success else env.failure_mode(),
                    expert_fault=getattr(expert, "fault", None),
                    perturbation=perturbation,
                )
        log.info(
            "task %d: %d/%d expert successes",
            task_id,
            sum(per_task[task_id]),
            len(per_task[task_id]),
        )
    recorder.finalize()
    return {
        "episodes": len(recorder.records),
        "successes": sum(r["success"] for r in recorder.records),
        "per_task_success": {t: float(np.mean(s)) for t, s in per_task.items()},
    }
