"""Stage `eval`: closed-loop evaluation of a saved policy in the task suite."""

from __future__ import annotations

import torch

from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.policies.factory import load_pretrained
from vlaexp.sim.factory import make_task_suite
from vlaexp.sim.runner import SimRunner


def eval_stage(ctx: RunContext) -> None:
    """Loads the policy from disk (``eval.policy_path`` or this run's last checkpoint), so
    what is evaluated is exactly what was saved."""
    cfg = ctx.cfg
    path = cfg.eval.policy_path or ctx.artifacts.get("policy")
    if path is None:
        raise ConfigError(
            "No policy to evaluate: run the `train` stage before `eval`, or set eval.policy_path "
            "to a pretrained_model directory (or a run dir)"
        )
    policy = load_pretrained(path, setting="eval.policy_path")
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    suite = make_task_suite(cfg.task_suite, policy.config.cameras)
    runner = SimRunner(
        suite,
        output_dir=ctx.run_dir / "eval",
        n_episodes=cfg.eval.n_episodes,
        task_ids=cfg.eval.task_ids,
        n_videos=cfg.eval.n_videos,
        max_steps=cfg.eval.max_steps,
    )
    metrics = runner.run(policy)
    ctx.log_metrics(metrics, step=int(ctx.metrics.get("train/global_step", 0)))
