"""Closed-loop evaluation during training, and the best-success checkpoint.

Loss says little about whether a robot policy works; success in the simulator does, so
``checkpoints/best`` is chosen by ``eval/pc_success``, not by loss.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from vlaexp.sim.runner import SimRunner
from vlaexp.sim.workers import SuiteSpec

log = logging.getLogger(__name__)


class SimEvalCallback(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, evaluate the policy in the task suite.

    Runs on rank 0 (other ranks wait); logs ``eval/*`` to every logger and the first
    episodes' videos to wandb; saves ``checkpoints/best`` when success improves.

    Args:
        task_suite: the `task_suite` config node (envs are built in the eval workers).
        every_n_steps: optimizer steps between evaluations (and once at the end of training).
        n_episodes, n_envs, n_videos, task_ids, max_steps: as in :class:`SimRunner`.
        output_dir: ``<output_dir>/step_<step>/eval_info.json`` (+ videos).
        checkpoint_dir: where ``best`` (and ``best.json``) go.
    """

    def __init__(
        self,
        task_suite: DictConfig | dict[str, Any],
        every_n_steps: int = 1000,
        n_episodes: int = 10,
        n_envs: int = 1,
        n_videos: int = 1,
        task_ids: list[int] | None = None,
        max_steps: int | None = None,
        output_dir: str | Path = "sim_eval",
        checkpoint_dir: str | Path = "checkpoints",
        keep_best: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.sim_eval.every_n_steps must be >= 1, got {every_n_steps}")
        self.task_suite = (
            OmegaConf.to_container(task_suite, resolve=True)
            if isinstance(task_suite, DictConfig)
            else dict(task_suite)
        )
        self.every_n_steps = every_n_steps
        self.runner_kwargs = {
            "n_episodes": n_episodes,
            "n_envs": n_envs,
            "n_videos": n_videos,
            "task_ids": task_ids,
            "max_steps": max_steps,
        }
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.keep_best = keep_best
        self.best: float = -1.0
        self._last_step = -1

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, float] | None:
        step = trainer.global_step
        if trainer.sanity_checking or trainer.fast_dev_run or step == 0 or step == self._last_step:
            return None
        self._last_step = step
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            metrics = self._run(trainer, pl_module, step)
        improved = trainer.strategy.broadcast(
            metrics.get("eval/pc_success", -1.0) > self.best, src=0
        )
        if trainer.is_global_zero and improved:
            self.best = metrics["eval/pc_success"]
        if self.keep_best and improved:
            trainer.save_checkpoint(self.checkpoint_dir / "best")
            if trainer.is_global_zero:
                (self.checkpoint_dir / "best.json").write_text(
                    json.dumps({"step": step, "pc_success": self.best})
                )
        trainer.strategy.barrier("vlaexp_sim_eval")
        return metrics

    def _run(self, trainer: pl.Trainer, pl_module: Any, step: int) -> dict[str, float]:
        was_training = pl_module.training
        pl_module.eval()
        try:
            spec = SuiteSpec(self.task_suite, list(pl_module.config.cameras))
            runner = SimRunner(spec, self.output_dir / f"step_{step:06d}", **self.runner_kwargs)
            metrics = runner.run(pl_module)
        finally:
            pl_module.train(was_training)
        log.info("step %d: eval/pc_success %.1f", step, metrics["eval/pc_success"])
        info = json.loads((runner.output_dir / "eval_info.json").read_text())
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if info["video_paths"] and hasattr(logger, "log_video"):
                logger.log_video(
                    "eval/video",
                    videos=info["video_paths"],
                    step=step,
                    format=["mp4"] * len(info["video_paths"]),
                )
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best", -1.0)
