"""Stage `eval`: closed-loop evaluation of a saved policy in the task suite."""

from __future__ import annotations

import logging

import torch
from omegaconf import OmegaConf

from vlaexp.data.collect import EpisodeRecorder
from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.policies.factory import load_pretrained
from vlaexp.sim.runner import SimRunner
from vlaexp.sim.workers import SuiteSpec

log = logging.getLogger(__name__)


def check_action_dim(policy_dim: int, setting: str = "policy.action_dim") -> None:
    """Every suite speaks LIBERO's 7-D action contract."""
    from vlaexp.sim.base import ACTION_DIM

    if policy_dim != ACTION_DIM:
        raise ConfigError(f"{setting}={policy_dim} but the task suites take {ACTION_DIM}-D actions")


def eval_stage(ctx: RunContext) -> None:
    """Loads the policy from disk (this run's last checkpoint, else ``policy.path``), so
    what is evaluated is exactly what was saved."""
    cfg = ctx.cfg
    path = ctx.artifacts.get("policy") or cfg.policy.path
    if path is None:
        raise ConfigError(
            "No policy to evaluate: run the `train` stage before `eval`, or set policy.path "
            "to a pretrained_model directory, a run dir or a hub id"
        )
    policy = load_pretrained(path, setting="policy.path")
    check_action_dim(policy.config.action_dim)
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    spec = SuiteSpec(
        OmegaConf.to_container(cfg.task_suite, resolve=True), list(policy.config.cameras)
    )
    runner = SimRunner(
        spec,
        output_dir=ctx.run_dir / "eval",
        n_episodes=cfg.eval.n_episodes,
        task_ids=cfg.eval.task_ids,
        n_videos=cfg.eval.n_videos,
        max_steps=cfg.eval.max_steps,
        n_envs=cfg.eval.n_envs,
        keep_episodes=cfg.eval.record_dataset,
    )
    metrics = runner.run(policy)
    ctx.log_metrics(metrics, step=int(ctx.metrics.get("train/global_step", 0)))
    if cfg.eval.record_dataset:
        suite = runner.suite
        recorder = EpisodeRecorder(
            ctx.run_dir / "eval" / "rollouts",
            f"vlaexp/{suite.name}_rollouts",
            suite.fps,
            list(policy.config.cameras),
            suite.resolution,
        )
        for ep in runner.episodes:
            recorder.add(ep, source="policy", policy_path=str(path))
        ctx.artifacts["rollouts"] = recorder.finalize()
        log.info("Recorded %d rollouts in %s", len(runner.episodes), ctx.artifacts["rollouts"])
