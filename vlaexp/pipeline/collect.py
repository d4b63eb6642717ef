"""Stage `collect`: scripted demonstrations of the task suite as a cached LeRobotDataset."""

from __future__ import annotations

import json
import logging

from omegaconf import OmegaConf

import vlaexp
from vlaexp.data.collect import collect_demonstrations
from vlaexp.pipeline.cache import cached_artifact
from vlaexp.pipeline.context import RunContext
from vlaexp.sim.factory import make_task_suite

log = logging.getLogger(__name__)

# Bump when the recorded format or the recording procedure changes: old caches are rebuilt.
COLLECT_FORMAT = 1


def collect_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    if cfg.data.source != "collect":
        log.info("data.source=%s: nothing to collect", cfg.data.source)
        return
    cameras = list(cfg.camera.names)
    spec = {
        "format": COLLECT_FORMAT,
        "vlaexp": vlaexp.__version__,
        "task_suite": OmegaConf.to_container(cfg.task_suite, resolve=True),
        "cameras": cameras,
        "collect": OmegaConf.to_container(cfg.data.collect, resolve=True),
    }

    def build(tmp):
        suite = make_task_suite(cfg.task_suite, cameras)
        c = cfg.data.collect
        return collect_demonstrations(
            suite,
            tmp,
            repo_id=f"vlaexp/{cfg.task_suite.name}",
            cameras=cameras,
            episodes_per_task=c.episodes_per_task,
            seed_offset=c.seed_offset,
            use_videos=c.use_videos,
            keep_failures=c.keep_failures,
            task_ids=c.task_ids,
        )

    root = cached_artifact(cfg.paths.cache_dir, "datasets", spec, build, label=cfg.task_suite.name)
    ctx.artifacts["dataset"] = root
    info = json.loads((root / "meta" / "info.json").read_text())
    ctx.metrics["collect/episodes"] = float(info["total_episodes"])
