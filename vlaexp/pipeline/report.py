"""Stage `report`: the run's metrics and artifacts as ``summary.json`` and ``summary.md``."""

from __future__ import annotations

import json

from vlaexp.pipeline.context import RunContext


def report_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    summary = {
        "experiment": cfg.name,
        "policy": cfg.policy.name,
        "task_suite": cfg.task_suite.name,
        "camera": cfg.camera.name,
        "seed": cfg.seed,
        "metrics": dict(sorted(ctx.metrics.items())),
        "artifacts": {k: str(v) for k, v in ctx.artifacts.items()},
    }
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {cfg.name}: {cfg.policy.name} on {cfg.task_suite.name} ({cfg.camera.name}, seed {cfg.seed})",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in summary["metrics"].items()],
        "",
        *[f"- {k}: `{v}`" for k, v in summary["artifacts"].items()],
    ]
    (ctx.run_dir / "summary.md").write_text("\n".join(lines) + "\n")
