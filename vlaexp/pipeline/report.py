"""Stage `report`: the run's metrics and artifacts as ``summary.json`` and ``summary.md``."""

from __future__ import annotations

import json
import numbers

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
        *[f"| {k} | {_cell(v)} |" for k, v in summary["metrics"].items()],
        "",
        *[f"- {k}: `{v}`" for k, v in summary["artifacts"].items()],
    ]
    (ctx.run_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _cell(value: object) -> str:
    """A number to 4 significant digits; anything else (None: a metric the run's data could
    not give) as it prints."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)
