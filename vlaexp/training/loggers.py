"""Lightning loggers from the `logger` group, with wandb grouping and tags filled in."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlaexp.training.distributed import global_rank

log = logging.getLogger(__name__)


def run_tags(cfg: DictConfig) -> list[str]:
    """``policy:<name>``, ``task:<name>``, ``camera:<name>``, ``seed:<n>`` plus ``cfg.tags``."""
    return [
        f"policy:{cfg.policy.name}",
        f"task:{cfg.task_suite.name}",
        f"camera:{cfg.camera.name}",
        f"seed:{cfg.seed}",
        *cfg.tags,
    ]


def sweep_group(cfg: DictConfig) -> str | None:
    """The wandb group shared by every job of one multirun (None for single runs)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{cfg.name}/{Path(HydraConfig.get().sweep.dir).name}"
    return None


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate every logger node of ``cfg.logger``; wandb gets group, tags, config."""
    loggers = []
    record: dict[str, Any] = {}
    for key, node in cfg.logger.items():
        if node is None:
            continue
        kwargs: dict[str, Any] = {}
        if "WandbLogger" in node._target_:
            kwargs = {
                "group": node.group or sweep_group(cfg),
                "tags": list(node.tags) or run_tags(cfg),
                "name": node.name
                or f"{cfg.name}_{cfg.task_suite.name}_{cfg.policy.name}_s{cfg.seed}",
            }
            Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        logger = instantiate(node, **kwargs)
        if "WandbLogger" in node._target_:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        record[key] = {"target": node._target_, **kwargs}
        loggers.append(logger)
    run_dir = Path(cfg.paths.output_dir)
    if global_rank() != 0:  # Lightning's loggers write on rank 0 only; so does this record
        return loggers
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "loggers.json").write_text(json.dumps(record, indent=2))
    return loggers
