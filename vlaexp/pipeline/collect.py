"""Stage `collect`: scripted demonstrations of the task suite as a cached LeRobotDataset."""

from __future__ import annotations

import json
import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

import vlaexp
from vlaexp.data.collect import collect_demonstrations
from vlaexp.pipeline.cache import cached_artifact
from vlaexp.pipeline.context import RunContext
from vlaexp.sim.workers import SuiteSpec

log = logging.getLogger(__name__)

# Bump when the recorded format or the recording procedure changes: old caches are rebuilt.
COLLECT_FORMAT = 1


def dataset_spec(cfg: DictConfig) -> dict[str, Any]:
    """What determines the collect stage's dataset, its cache key: the task suite, the
    cameras and the collect settings but how many processes record and write it."""
    return {
        "format": COLLECT_FORMAT,
        "vlaexp": vlaexp.__version__,
        "task_suite": OmegaConf.to_container(cfg.task_suite, resolve=True),
        "cameras": list(cfg.camera.names),
        "collect": {
            k: v
            for k, v in OmegaConf.to_container(cfg.data.collect, resolve=True).items()
            if k not in ("n_workers", "writers")
        },
    }


def collect_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    if cfg.data.source != "collect":
        log.info("data.source=%s: nothing to collect", cfg.data.source)
        return
    cameras = list(cfg.camera.names)
    spec = dataset_spec(cfg)

    def build(tmp):
        spec = SuiteSpec(OmegaConf.to_container(cfg.task_suite, resolve=True), cameras)
        c = cfg.data.collect
        return collect_demonstrations(
            spec,
            tmp,
            repo_id=f"vlaexp/{cfg.task_suite.name}",
            cameras=cameras,
            episodes_per_task=c.episodes_per_task,
            seed_offset=c.seed_offset,
            use_videos=c.use_videos,
            keep_failures=c.keep_failures,
            task_ids=c.task_ids,
            n_workers=c.n_workers,
            writers=c.writers,
            action_noise=c.action_noise,
            action_noise_phases=None
            if c.action_noise_phases is None
            else list(c.action_noise_phases),
            end_failures_after_idle=c.end_failures_after_idle,
        )

    root = cached_artifact(cfg.paths.cache_dir, "datasets", spec, build, label=cfg.task_suite.name)
    ctx.artifacts["dataset"] = root
    info = json.loads((root / "meta" / "info.json").read_text())
    ctx.metrics["collect/episodes"] = float(info["total_episodes"])
