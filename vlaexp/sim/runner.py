"""Closed-loop evaluation: ``SimRunner(suite, ...).run(policy) -> metrics``.

Writes ``eval_info.json`` in LeRobot's shape (per-episode rows and an aggregate with
``pc_success``, ``avg_sum_reward``, ``avg_max_reward``, ``eval_s``) and mp4s of the first
``n_videos`` episodes. Evaluation uses the suite's fixed eval seeds, never training seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vlaexp.sim.base import TaskSuite
from vlaexp.sim.rollout import Episode, rollout


class SimPolicy(Protocol):
    def reset(self) -> None: ...
    def act(self, obs: dict[str, Any], instruction: str) -> np.ndarray: ...


def write_video(path: Path, episode: Episode, fps: int) -> Path:
    """Cameras side by side, one frame per step, H.264 mp4."""
    import imageio.v3 as iio

    frames = [np.concatenate(list(o["images"].values()), axis=1) for o in episode.observations]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), plugin="pyav", fps=fps, codec="libx264")
    return path


class SimRunner:
    """Evaluates a policy on ``n_episodes`` fixed seeds of each task of a suite.

    Args:
        suite: the task suite (its cameras must include the policy's).
        output_dir: where ``eval_info.json`` and ``videos/`` go.
        n_episodes: episodes per task, the first seeds of ``suite.eval_seeds(task)``.
        task_ids: tasks to run (None = all).
        n_videos: how many of the first episodes are saved as mp4.
        max_steps: horizon override (None = the suite's).
    """

    def __init__(
        self,
        suite: TaskSuite,
        output_dir: str | Path,
        n_episodes: int = 10,
        task_ids: list[int] | None = None,
        n_videos: int = 2,
        max_steps: int | None = None,
    ) -> None:
        self.suite = suite
        self.output_dir = Path(output_dir)
        self.n_episodes = n_episodes
        self.task_ids = list(task_ids) if task_ids is not None else list(suite.task_ids)
        unknown = sorted(set(self.task_ids) - set(suite.task_ids))
        if unknown:
            raise ValueError(
                f"eval.task_ids {unknown} not in suite '{suite.name}' (tasks {suite.task_ids})"
            )
        self.n_videos = n_videos
        self.max_steps = max_steps

    def run(self, policy: SimPolicy) -> dict[str, float]:
        start = time.time()
        rows: list[dict[str, Any]] = []
        videos = []
        for task_id in self.task_ids:
            with self.suite.make_env(task_id) as env:
                for seed in self.suite.eval_seeds(task_id)[: self.n_episodes]:
                    record = len(videos) < self.n_videos
                    policy.reset()  # a stale action queue from the last episode ruins the next
                    t0 = time.time()
                    ep = rollout(
                        env,
                        lambda obs: policy.act(obs, env.instruction),
                        seed,
                        self.max_steps,
                        record,
                    )
                    rows.append(
                        {
                            "episode_ix": len(rows),
                            "task_id": task_id,
                            "instruction": env.instruction,
                            "seed": seed,
                            "success": ep.success,
                            "steps": ep.steps,
                            "sum_reward": float(np.sum(ep.rewards)),
                            "max_reward": float(np.max(ep.rewards)) if ep.rewards else 0.0,
                            "failure_mode": None if ep.success else "timeout",
                            "seconds": round(time.time() - t0, 3),
                        }
                    )
                    if record:
                        name = f"eval_episode_{len(rows) - 1:03d}_task{task_id}.mp4"
                        videos.append(
                            str(write_video(self.output_dir / "videos" / name, ep, self.suite.fps))
                        )
        eval_s = time.time() - start
        metrics = self._aggregate(rows, eval_s)
        info = {
            "suite": self.suite.name,
            "per_episode": rows,
            "per_task": {
                str(t): {"pc_success": metrics[f"eval/task_{t}/pc_success"]} for t in self.task_ids
            },
            "aggregated": {
                k.removeprefix("eval/"): v for k, v in metrics.items() if "/task_" not in k
            },
            "video_paths": videos,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "eval_info.json").write_text(json.dumps(info, indent=2))
        return metrics

    def _aggregate(self, rows: list[dict[str, Any]], eval_s: float) -> dict[str, float]:
        success = np.array([r["success"] for r in rows], dtype=float)
        metrics = {
            "eval/pc_success": 100.0 * float(success.mean()) if rows else 0.0,
            "eval/avg_sum_reward": float(np.mean([r["sum_reward"] for r in rows])) if rows else 0.0,
            "eval/avg_max_reward": float(np.mean([r["max_reward"] for r in rows])) if rows else 0.0,
            "eval/n_episodes": float(len(rows)),
            "eval/eval_s": eval_s,
            "eval/eval_ep_s": eval_s / max(1, len(rows)),
        }
        for t in self.task_ids:
            s = [r["success"] for r in rows if r["task_id"] == t]
            metrics[f"eval/task_{t}/pc_success"] = 100.0 * float(np.mean(s)) if s else 0.0
        return metrics
