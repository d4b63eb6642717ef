"""What the stages of one run share: the resolved config, the run dir, artifacts, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass
class RunContext:
    cfg: DictConfig  # resolved once at start
    run_dir: Path
    artifacts: dict[str, Path] = field(default_factory=dict)  # e.g. "dataset", "policy"
    metrics: dict[str, float] = field(default_factory=dict)  # flat, wandb-style names
    objects: dict[str, Any] = field(default_factory=dict)  # built once, shared by stages
    _loggers: list[Any] | None = None

    @property
    def loggers(self) -> list[Any]:
        """The run's Lightning loggers, built once so every stage logs to the same run."""
        if self._loggers is None:
            from vlaexp.training.loggers import build_loggers

            self._loggers = build_loggers(self.cfg)
        return self._loggers

    @property
    def wandb_run(self) -> Any:
        """The wandb run when wandb is one of the loggers (for images and videos), else None."""
        return next(
            (lg.experiment for lg in self.loggers if type(lg).__name__ == "WandbLogger"), None
        )

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record metrics in the run summary and send them to every logger. A nested dict
        (e.g. value_eval's AUROC per failure kind) becomes one flat name per leaf
        (``a/b/c``); a value that is None (a metric its data could not give) stays in the
        summary but is not sent to the loggers."""
        metrics = flat_metrics(metrics)
        self.metrics.update(metrics)
        scalars = {k: v for k, v in metrics.items() if v is not None}
        for logger in self.loggers:
            logger.log_metrics(scalars, step=step)


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
