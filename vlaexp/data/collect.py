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
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlaexp.data.episodes import EPISODES_SIDECAR
from vlaexp.sim.base import ACTION_DIM, STATE_DIM, TaskSuite
from vlaexp.sim.rollout import Episode
from vlaexp.sim.workers import SuiteSpec

log = logging.getLogger(__name__)

# threads of LeRobot's image writer while recording demonstrations (PNG encoding)
IMAGE_WRITER_THREADS = 4


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
        image_writer_threads: int = 0,
    ) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        # image_writer_threads > 0: LeRobot's own writer encodes the PNG frames in that many
        # threads (save_episode waits for them), instead of one after another in add_frame
        self.dataset = LeRobotDataset.create(
            repo_id,
            fps=fps,
            features=dataset_features(cameras, resolution, use_videos),
            root=root,
            use_videos=use_videos,
            image_writer_threads=image_writer_threads,
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
        self.dataset.stop_image_writer()
        self.dataset.finalize()
        (self.root / EPISODES_SIDECAR).write_text(
            "".join(json.dumps(r) + "\n" for r in self.records)
        )
        return self.root


class BackgroundWriter:
    """Calls ``write(*args, **kwargs)`` for each :meth:`submit`, in order, in one thread of its own.

    Recording is bound by this process's writing: LeRobot's ``save_episode`` computes each
    episode's statistics (quantile histograms of every feature, images included) and the PNG
    frames are encoded here, while the env workers wait in lockstep for the next batch. In a
    thread the writing overlaps the next batch's rollouts (numpy and PIL release the GIL in
    their kernels). The order, and so the dataset, is the same. At most ``max_pending``
    submissions wait (memory: a 128 px episode of two cameras is ~10 MB); a failed write is
    raised at the next :meth:`submit` or at :meth:`close`, never lost. ``max_pending=0``
    writes in line instead: each :meth:`submit` in the caller's thread, at once (no thread).
    """

    _DONE = object()

    def __init__(self, write: Callable[..., Any], max_pending: int) -> None:
        self._write = write
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if max_pending > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
            self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not self._DONE:
            if self._error is None:  # after a failure, drain without writing
                try:
                    self._write(*item[0], **item[1])
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing an episode failed: {self._error!r}") from self._error

    def submit(self, *args: Any, **kwargs: Any) -> None:
        self._raise()
        if self._thread is None:
            self._write(*args, **kwargs)
        else:
            self._queue.put((args, kwargs))

    def close(self) -> None:
        """Wait for every submitted write; raise the first failure."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(self._DONE)
            self._thread.join()
        self._raise()


def end_stalled_failure(ep: Episode, idle_steps: int | None) -> Episode:
    """A failed episode's recording ended ``idle_steps`` steps into the expert's first stall
    (consecutive actions without motion: a frozen expert, or one whose plan has run out after
    a fault), as an operator ends a stalled attempt; successes and episodes without such a
    stall are returned as they are (``idle_steps`` None: always). Without it a failure runs
    to the horizon, and the frames of a still scene carry labels that count down to an end
    nothing in them shows (issue 7's value function)."""
    if idle_steps is None or ep.success:
        return ep
    if idle_steps < 1:
        raise ValueError(f"data.collect.end_failures_after_idle must be >= 1, got {idle_steps}")
    run = 0
    for t, action in enumerate(ep.actions):
        run = run + 1 if not np.any(np.asarray(action)[:-1]) else 0  # all but the gripper
        if run == idle_steps:
            n = t + 1
            if n == len(ep.actions):
                return ep
            return dataclasses.replace(
                ep,
                observations=ep.observations[:n],
                actions=ep.actions[:n],
                rewards=ep.rewards[:n],
            )
    return ep


def collect_demonstrations(
    suite: TaskSuite | SuiteSpec,
    root: str | Path,
    repo_id: str,
    cameras: list[str],
    episodes_per_task: int,
    seed_offset: int = 0,
    use_videos: bool = True,
    keep_failures: bool = True,
    task_ids: list[int] | None = None,
    n_workers: int = 1,
    action_noise: float = 0.0,
    action_noise_phases: list[str] | None = None,
    end_failures_after_idle: int | None = None,
    background_writing: bool = True,
    writers: int = 1,
    seeds: dict[int, list[int]] | None = None,
) -> dict[str, Any]:
    """Record ``episodes_per_task`` expert episodes of every task into a new dataset at ``root``.

    Seeds come from ``suite.train_seeds`` (disjoint from the evaluation seeds). The expert
    acts in the SimRunner's env workers: ``n_workers`` > 1 rolls episodes out in that many
    spawned processes (needs a :class:`SuiteSpec`, whose config they build the suite from),
    while this process writes them in seed order as they finish, so the dataset is the
    same whatever ``n_workers`` is. Returns a summary: episodes written, successes,
    per-task expert success rate. ``action_noise`` > 0 records DART demonstrations: the env
    executes the expert's actions plus that much Gaussian noise on the translation, the
    dataset keeps the expert's own (corrective) actions; ``action_noise_phases`` limits the
    noise to those phases of the expert (None: all). ``end_failures_after_idle`` ends each
    failed episode's recording that many steps into the expert's first stall
    (:func:`end_stalled_failure`). ``background_writing`` writes the episodes in a thread
    beside the rollouts (:class:`BackgroundWriter`) and the PNG frames in LeRobot's image
    threads; false writes each in line, one frame after another (the same dataset, slower).
    ``writers`` > 1 records in that many processes, each its contiguous share of the episodes
    with its share of the ``n_workers`` env processes and a writer of its own, then merges
    the shares in order (:func:`_collect_sharded`): the same dataset, recorded faster where one
    process's writing bounds it. ``seeds`` ({task: [seed, ...]}) records those episodes instead
    of ``episodes_per_task`` training seeds a task (one share of a sharded recording).
    """
    if writers < 1:
        raise ValueError(f"data.collect.writers must be >= 1, got {writers}")
    if end_failures_after_idle is not None and end_failures_after_idle < 1:
        raise ValueError(
            f"data.collect.end_failures_after_idle must be >= 1 or null, got {end_failures_after_idle}"
        )
    from vlaexp.sim.actors import ScriptedExpert
    from vlaexp.sim.runner import SimRunner

    spec = suite if isinstance(suite, SuiteSpec) else SuiteSpec(None, cameras, suite=suite)
    if (n_workers > 1 or writers > 1) and spec.config is None:
        raise ValueError(
            "n_workers > 1 and writers > 1 need a SuiteSpec with the suite's config to build it"
        )
    built = spec.build()
    task_ids = list(built.task_ids) if task_ids is None else list(task_ids)
    unknown = sorted(set(task_ids) - set(built.task_ids))
    if unknown:
        raise ValueError(
            f"data.collect.task_ids {unknown} not in suite '{built.name}' (valid: {built.task_ids})"
        )
    if action_noise_phases is not None and built.expert_phases:
        unknown = sorted(set(action_noise_phases) - set(built.expert_phases))
        if unknown:
            raise ValueError(
                f"data.collect.action_noise_phases {unknown} are not phases of the "
                f"'{built.name}' expert (valid: {list(built.expert_phases)})"
            )
    if writers > 1:  # the settings checked above, before any process starts
        return _collect_sharded(
            spec, root, repo_id, cameras, episodes_per_task, writers,
            seed_offset=seed_offset, use_videos=use_videos, keep_failures=keep_failures,
            task_ids=task_ids, n_workers=n_workers, action_noise=action_noise,
            action_noise_phases=action_noise_phases,
            end_failures_after_idle=end_failures_after_idle,
            background_writing=background_writing,
        )  # fmt: skip
    threads = IMAGE_WRITER_THREADS if background_writing else 0
    recorder = EpisodeRecorder(
        root, repo_id, built.fps, cameras, built.resolution, use_videos, threads
    )
    pending = 2 * max(1, n_workers) if background_writing else 0
    writer = BackgroundWriter(recorder.add, max_pending=pending)
    perturbation = dataclasses.asdict(built.perturbation) if hasattr(built, "perturbation") else {}
    if seeds is None:
        seeds = {t: built.train_seeds(t, episodes_per_task, seed_offset) for t in task_ids}
    else:
        task_ids = [t for t in task_ids if seeds.get(t)]
    per_task: dict[int, list[bool]] = {t: [] for t in task_ids}

    def record(ep: Episode, row: dict[str, Any]) -> None:
        per_task[ep.task_id].append(ep.success)
        ran = ep.steps
        ep = end_stalled_failure(ep, end_failures_after_idle)
        if ep.success or keep_failures:
            writer.submit(
                ep,
                steps_run=ran,  # > length where the recording ended at a stall
                failure_mode=row["failure_mode"],
                expert_fault=row.get("expert_fault"),
                expert_fault_step=row.get("expert_fault_step"),  # the expert's step it struck
                # the recorded actions' noise this episode (0 for the clean half of a mix)
                expert_action_noise=row.get("expert_action_noise"),
                perturbation=perturbation,
            )
        if len(per_task[ep.task_id]) == len(seeds[ep.task_id]):
            log_task_successes(ep.task_id, per_task[ep.task_id])

    try:
        SimRunner(
            spec,
            None,
            task_ids=task_ids,
            n_videos=0,
            n_envs=n_workers,
            seeds={t: seeds[t] for t in task_ids},
            episode_sink=record,
            expert_noise=action_noise,
            expert_noise_phases=action_noise_phases,
        ).run(ScriptedExpert())
    finally:
        writer.close()
    recorder.finalize()
    return {
        "episodes": len(recorder.records),
        "successes": sum(r["success"] for r in recorder.records),
        "per_task_success": {t: float(np.mean(s)) for t, s in per_task.items()},
    }


def log_task_successes(task_id: int, successes: list[bool]) -> None:
    log.info("task %d: %d/%d expert successes", task_id, sum(successes), len(successes))


def _record_share(
    share: int, root: Path, repo_id: str, seeds: dict[int, list[int]], kwargs: dict
) -> None:
    """One process of a sharded recording (:func:`_collect_sharded`): its episodes into
    ``root``, its progress logged to stderr (a spawned process has no log handler of its own)."""
    logging.basicConfig(
        level=logging.INFO, format=f"[%(asctime)s][share {share}] %(message)s", force=True
    )
    spec = SuiteSpec(kwargs.pop("suite_config"), kwargs["cameras"])
    collect_demonstrations(spec, root, repo_id, seeds=seeds, **kwargs)


def _collect_sharded(
    suite: TaskSuite | SuiteSpec,
    root: str | Path,
    repo_id: str,
    cameras: list[str],
    episodes_per_task: int,
    writers: int,
    **options: Any,
) -> dict[str, Any]:
    """``collect_demonstrations`` in ``writers`` processes, merged with LeRobot's
    ``aggregate_datasets``.

    One process writes at most ~1.6 demos a second: LeRobot's ``save_episode`` (statistics,
    parquet) holds the GIL for ~0.6 s of a 128 px two-camera demo here, against ~0.4 s of env
    worker time, so past a few env workers more of them stop helping, and a thread cannot
    lift that bound; other processes can. The episodes (training seeds, task-major: one
    process's order) are cut into ``writers`` contiguous shares; each is recorded into a
    dataset of its own with ``n_workers / writers`` env workers, and the shares are
    aggregated in order, so the frames, episode indices, tasks and records are those of one
    process, and so are the statistics of every observation, action and reward (aggregated
    in another order: equal to rounding). Those of the bookkeeping columns (``index``,
    ``episode_index``, ``task_index``) are LeRobot's aggregate's: counted within each share,
    and used by nothing here. A failed share is raised, and no merged dataset is written.
    """
    import multiprocessing as mp
    import shutil

    from lerobot.datasets.aggregate import aggregate_datasets

    spec = suite if isinstance(suite, SuiteSpec) else SuiteSpec(None, cameras, suite=suite)
    built = spec.build()
    task_ids = list(built.task_ids) if options["task_ids"] is None else list(options["task_ids"])
    offset = options.pop("seed_offset")
    jobs = [(t, s) for t in task_ids for s in built.train_seeds(t, episodes_per_task, offset)]
    if not jobs:
        raise ValueError(f"nothing to record: {episodes_per_task} episodes of tasks {task_ids}")
    shares = np.array_split(np.arange(len(jobs)), min(writers, len(jobs)))
    root = Path(root)
    roots = [root.with_name(f"{root.name}.share{k}") for k in range(len(shares))]
    ctx = mp.get_context("spawn")
    procs = []
    for k, share in enumerate(shares):
        seeds: dict[int, list[int]] = {}
        for i in share:
            seeds.setdefault(jobs[i][0], []).append(jobs[i][1])
        kwargs = {
            **options,
            "suite_config": spec.config,
            "cameras": cameras,
            "episodes_per_task": episodes_per_task,
            "n_workers": max(1, options["n_workers"] // len(shares)),
        }
        shutil.rmtree(roots[k], ignore_errors=True)
        # not daemonic: a share spawns env worker processes of its own
        proc = ctx.Process(target=_record_share, args=(k, roots[k], repo_id, seeds, kwargs))
        proc.start()
        procs.append(proc)
    try:
        for proc in procs:
            proc.join()
        failed = [k for k, proc in enumerate(procs) if proc.exitcode != 0]
        if failed:
            raise RuntimeError(
                f"recording shares {failed} of {len(shares)} failed (exit codes "
                f"{[procs[k].exitcode for k in failed]}; their errors are in the log above)"
            )
        aggregate_datasets([repo_id] * len(roots), repo_id, roots=roots, aggr_root=root)
        records: list[dict[str, Any]] = []
        for r in roots:
            for line in (r / EPISODES_SIDECAR).read_text().splitlines():
                records.append({**json.loads(line), "episode_index": len(records)})
        (root / EPISODES_SIDECAR).write_text("".join(json.dumps(r) + "\n" for r in records))
    finally:
        for proc in procs:  # an interrupted parent leaves no share recording
            if proc.is_alive():
                proc.kill()
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
    per_task: dict[int, list[bool]] = {}
    for r in records:
        per_task.setdefault(r["task_id"], []).append(r["success"])
    for t, successes in per_task.items():
        log_task_successes(t, successes)
    return {
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "per_task_success": {t: float(np.mean(s)) for t, s in per_task.items()},
    }
