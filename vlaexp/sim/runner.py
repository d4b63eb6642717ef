"""Closed-loop evaluation: ``SimRunner(spec, ...).run(policy) -> metrics``.

Episodes run in ``n_envs`` env processes (spawned, envs built inside them) that step in
lockstep while the policy acts on the whole batch at once. Writes ``eval_info.json`` in
LeRobot's shape (per-episode rows and an aggregate with ``pc_success``,
``avg_sum_reward``, ``avg_max_reward``, ``eval_s``) and mp4s of the first ``n_videos``
episodes. Evaluation uses the suite's fixed eval seeds, never training seeds.

A learned policy's own randomness (the flow-matching noise it samples from torch's generator)
is seeded too, from the seeds of the episodes that run together, inside a forked generator
state: the same checkpoint on the same seeds and ``n_envs`` gives the same rollouts whether
it runs right after training or alone from disk, and the caller's generator is left as it
was. (Unseeded, the two could not be told apart from noise: one Pi0 checkpoint scored 82% in
its training run and 66% alone on the same 25 seeds per task.)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vlaexp.sim.actors import ScriptedExpert
from vlaexp.sim.rollout import Episode
from vlaexp.sim.workers import LocalWorker, ProcessWorker, SuiteSpec


class StepMonitor(Protocol):
    """Watches a run: ``on_step`` sees what the policy is about to act on (running episodes
    only, by their episode index), ``on_episode_end`` gets each finished episode's row."""

    def on_step(
        self, episode_ixs: list[int], observations: list[dict[str, Any]], instructions: list[str]
    ) -> None: ...
    def on_episode_end(self, row: dict[str, Any]) -> None: ...


class SimPolicy(Protocol):
    def reset(self) -> None: ...
    def act_batch(
        self, observations: list[dict[str, Any]], instructions: list[str]
    ) -> np.ndarray: ...


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
        spec: how to build the suite (config + cameras); workers build their own copy.
        output_dir: where ``eval_info.json`` and ``videos/`` go (None: nothing is written).
        n_episodes: episodes per task, the first seeds of ``suite.eval_seeds(task)``.
        task_ids: tasks to run (None = all).
        n_videos: how many of the first episodes are saved as mp4.
        max_steps: horizon override (None = the suite's).
        n_envs: env processes stepping in parallel (1 = in this process).
        keep_episodes: keep every episode (observations included) in ``self.episodes``,
            e.g. to record policy rollouts as a dataset.
        monitor: optional :class:`StepMonitor` (e.g. runtime RND uncertainty scoring).
        seeds: explicit seeds per task (e.g. the training seeds the collect stage records)
            instead of the first ``n_episodes`` evaluation seeds.
        episode_sink: called with each finished episode (observations kept) and its row as
            it completes, instead of holding every episode in memory (recording demos).
        expert_noise: with the scripted expert, the std of Gaussian noise (action units) added
            to the translation (x, y, z) of the actions the env executes, while the episodes keep
            the expert's own actions (DART demonstrations); 0 = none.
        expert_noise_phases: the expert's phases that noise applies in (None: all).
    """

    def __init__(
        self,
        spec: SuiteSpec,
        output_dir: str | Path | None,
        n_episodes: int = 10,
        task_ids: list[int] | None = None,
        n_videos: int = 2,
        max_steps: int | None = None,
        n_envs: int = 1,
        keep_episodes: bool = False,
        monitor: StepMonitor | None = None,
        seeds: dict[int, list[int]] | None = None,
        episode_sink: Callable[[Episode, dict[str, Any]], None] | None = None,
        expert_noise: float = 0.0,
        expert_noise_phases: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.suite = spec.build()  # metadata only; simulators are built by the workers
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.n_episodes = n_episodes
        self.task_ids = list(task_ids) if task_ids is not None else list(self.suite.task_ids)
        unknown = sorted(set(self.task_ids) - set(self.suite.task_ids))
        if unknown:
            raise ValueError(
                f"eval.task_ids {unknown} not in suite '{self.suite.name}' (valid: {self.suite.task_ids})"
            )
        if n_envs < 1:
            raise ValueError(f"eval.n_envs must be >= 1, got {n_envs}")
        if output_dir is None and n_videos:
            raise ValueError("n_videos > 0 needs an output_dir to write the videos to")
        self.n_videos = n_videos
        self.max_steps = max_steps
        self.n_envs = n_envs
        self.keep_episodes = keep_episodes
        self.monitor = monitor
        self.seeds = seeds
        self.episode_sink = episode_sink
        if expert_noise < 0:
            raise ValueError(f"expert_noise must be >= 0, got {expert_noise}")
        self.expert_noise = expert_noise
        self.expert_noise_phases = (
            None if expert_noise_phases is None else list(expert_noise_phases)
        )
        self.episodes: list[Episode] = []

    def _jobs(self) -> list[tuple[int, int]]:
        if self.seeds is not None:
            return [(t, s) for t in self.task_ids for s in self.seeds[t]]
        return [(t, s) for t in self.task_ids for s in self.suite.eval_seeds(t)[: self.n_episodes]]

    def run(self, policy: SimPolicy | ScriptedExpert) -> dict[str, float]:
        start = time.time()
        jobs = self._jobs()
        expert = isinstance(policy, ScriptedExpert)
        n_workers = max(1, min(self.n_envs, len(jobs)))
        workers = (
            [LocalWorker(self.spec)]
            if n_workers == 1
            else [ProcessWorker(self.spec) for _ in range(n_workers)]
        )
        rows: list[dict[str, Any]] = []
        videos: list[str] = []
        self.episodes = []
        try:
            for first in range(0, len(jobs), n_workers):
                batch = jobs[first : first + n_workers]
                with self._seeded_torch(batch):
                    episodes = self._run_batch(workers[: len(batch)], batch, policy, expert, first)
                for ix, (ep, mode, seconds, injected) in enumerate(episodes, start=first):
                    rows.append(self._row(ix, ep, mode, seconds))
                    if expert:
                        rows[-1].update(injected)  # the expert's fault and action noise
                    if self.episode_sink is not None:
                        self.episode_sink(ep, rows[-1])
                    if self.monitor is not None:
                        self.monitor.on_episode_end(rows[-1])
                    if ix < self.n_videos:
                        name = f"eval_episode_{ix:03d}_task{ep.task_id}.mp4"
                        videos.append(
                            str(write_video(self.output_dir / "videos" / name, ep, self.suite.fps))
                        )
                    if self.keep_episodes:
                        self.episodes.append(ep)
        finally:
            for w in workers:
                w.close()
        metrics = self._aggregate(rows, time.time() - start)
        self._write_info(rows, metrics, videos)
        return metrics

    @staticmethod
    @contextlib.contextmanager
    def _seeded_torch(batch: list[tuple[int, int]]) -> Iterator[None]:
        """torch's generators (CPU and every CUDA device) seeded from the batch's (task, seed)
        pairs for the batch's episodes, then restored."""
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            seed = np.random.SeedSequence([v for job in batch for v in job]).generate_state(1)[0]
            torch.manual_seed(int(seed))
            yield

    def _run_batch(
        self,
        workers: list[Any],
        batch: list[tuple[int, int]],
        policy: Any,
        expert: bool,
        first: int,
    ) -> list[tuple[Episode, str | None, float, tuple[str | None, int | None]]]:
        """Run one episode per worker in lockstep; (episode, failure mode, seconds, (the
        scripted expert's fault or None, the expert's action count when it struck)) each."""
        t0 = time.time()
        for w, (task_id, seed) in zip(workers, batch, strict=True):
            w.send("reset", task_id, seed, expert, self.expert_noise, self.expert_noise_phases)
        starts = [w.recv() for w in workers]
        obs = [s["obs"] for s in starts]
        instructions = [s["instruction"] for s in starts]
        horizons = [min(self.max_steps or s["max_steps"], s["max_steps"]) for s in starts]
        eps = [
            Episode(seed=seed, task_id=t, instruction=i)
            for (t, seed), i in zip(batch, instructions, strict=True)
        ]
        keep = [
            self.keep_episodes or self.episode_sink is not None or first + i < self.n_videos
            for i in range(len(batch))
        ]
        active = list(range(len(batch)))
        if not expert:
            policy.reset()  # a stale action queue from the last episode ruins the next
        while active:
            if self.monitor is not None:
                self.monitor.on_step(
                    [first + i for i in active],
                    [obs[i] for i in active],
                    [instructions[i] for i in active],
                )
            actions = (
                None
                if expert
                else np.asarray(policy.act_batch(obs, instructions), dtype=np.float32)
            )
            for i in active:
                workers[i].send("step", None if actions is None else actions[i])
            still = []
            for i in active:
                r = workers[i].recv()
                if keep[i]:
                    eps[i].observations.append(obs[i])
                eps[i].actions.append(r["action"])
                eps[i].rewards.append(float(r["reward"]))
                eps[i].info = r["info"]
                obs[i] = r["obs"]
                if r["terminated"]:
                    eps[i].success = True
                elif not r["truncated"] and eps[i].steps < horizons[i]:
                    still.append(i)
            active = still
        seconds = (time.time() - t0) / len(batch)
        out = []
        for i, ep in enumerate(eps):
            mode, injected = None, {}
            if not ep.success:
                workers[i].send("failure_mode")
                mode = workers[i].recv()
            if expert:
                workers[i].send("expert_info")
                injected = workers[i].recv()
            out.append((ep, mode, seconds, injected))
        return out

    @staticmethod
    def _row(ix: int, ep: Episode, failure_mode: str | None, seconds: float) -> dict[str, Any]:
        return {
            "episode_ix": ix,
            "task_id": ep.task_id,
            "instruction": ep.instruction,
            "seed": ep.seed,
            "success": ep.success,
            "steps": ep.steps,
            "sum_reward": float(np.sum(ep.rewards)),
            "max_reward": float(np.max(ep.rewards)) if ep.rewards else 0.0,
            "failure_mode": failure_mode,
            "seconds": round(seconds, 3),
            # suites that measure it (tabletop): TCP-to-object distance (m) at the first close
            "grasp_xy_error": ep.info.get("grasp_xy_error"),
        }

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
        offsets = [r["grasp_xy_error"] for r in rows if r["grasp_xy_error"] is not None]
        if offsets:  # how many episodes closed the gripper, and how far from the object
            metrics["eval/grasp_xy_error_median"] = float(np.median(offsets))
            metrics["eval/n_grasps"] = float(len(offsets))
        for t in self.task_ids:
            s = [r["success"] for r in rows if r["task_id"] == t]
            metrics[f"eval/task_{t}/pc_success"] = 100.0 * float(np.mean(s)) if s else 0.0
        return metrics

    def _write_info(
        self, rows: list[dict[str, Any]], metrics: dict[str, float], videos: list[str]
    ) -> None:
        if self.output_dir is None:
            return
        modes: dict[str, int] = {}
        for r in rows:
            if r["failure_mode"]:
                modes[r["failure_mode"]] = modes.get(r["failure_mode"], 0) + 1
        info = {
            "suite": self.suite.name,
            "per_episode": rows,
            "per_task": {
                str(t): {"pc_success": metrics[f"eval/task_{t}/pc_success"]} for t in self.task_ids
            },
            "failure_modes": modes,
            "aggregated": {
                k.removeprefix("eval/"): v for k, v in metrics.items() if "/task_" not in k
            },
            "video_paths": videos,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "eval_info.json").write_text(json.dumps(info, indent=2))
