"""The one shared Lightning Trainer every policy trains on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from vlaexp.training.checkpoint import LeRobotCheckpointIO, StepCheckpoint


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Every non-null node of ``cfg.callbacks`` (a dict of ``_target_`` nodes)."""
    return [instantiate(node) for node in cfg.callbacks.values() if node is not None]


def _strategy(trainer_cfg: DictConfig, wrap: Sequence[type] = ()) -> Any:
    """``trainer.strategy``; an FSDP strategy gets the policy's blocks as its wrap policy
    unless the config names one."""
    node = trainer_cfg.get("strategy", "auto")
    if not isinstance(node, DictConfig):
        return node
    kwargs: dict[str, Any] = {}
    if "FSDP" in str(node.get("_target_", "")) and wrap and "auto_wrap_policy" not in node:
        kwargs["auto_wrap_policy"] = set(wrap)
    return instantiate(node, **kwargs, _convert_="object")


def build_trainer(
    cfg: DictConfig,
    loggers: Sequence[Any] = (),
    extra_callbacks: Sequence[pl.Callback] = (),
    overrides: dict[str, Any] | None = None,
    policy: bool = True,
    wrap: Sequence[type] = (),
) -> pl.Trainer:
    """``lightning.Trainer`` from ``cfg.trainer`` with vlaexp's callbacks, loggers and
    LeRobot-layout checkpoint plugin. Lightning's own ModelCheckpoint is off: checkpoints
    come from the ``step_checkpoint`` callback.

    ``policy=False`` builds the same Trainer for a module that is not a policy (an RND, a
    tokenizer): ``overrides`` replace trainer settings, the ``callbacks`` group and the
    LeRobot checkpoint layout are left out, and a ModelCheckpoint in ``extra_callbacks``
    writes Lightning's own checkpoints. Those small modules train on one device (rank 0
    runs them after a data-parallel policy run): strategy, devices and nodes are reset.

    ``wrap``: the module classes FSDP shards as units (the policy's ``fsdp_blocks``)."""
    trainer_cfg = OmegaConf.merge(cfg.trainer, overrides) if overrides else cfg.trainer
    if not policy:
        single = {"strategy": "auto", "devices": 1, "num_nodes": 1, "sync_batchnorm": False}
        trainer_cfg = OmegaConf.merge(trainer_cfg, single)
        callbacks = list(extra_callbacks)
        return instantiate(
            trainer_cfg,
            callbacks=callbacks,
            logger=list(loggers) if loggers else False,
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
            default_root_dir=cfg.paths.output_dir,
            _convert_="object",
        )
    callbacks = [*build_callbacks(cfg), *extra_callbacks]
    # Checkpoints run after every other callback's per-step work (e.g. an EMA update), as
    # Lightning orders its own Checkpoint callbacks (ours is a plain Callback: see checkpoint.py).
    callbacks.sort(key=lambda c: isinstance(c, StepCheckpoint))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(
        trainer_cfg,
        strategy=_strategy(trainer_cfg, wrap),
        callbacks=callbacks,
        logger=list(loggers) if loggers else False,
        plugins=[LeRobotCheckpointIO()],
        enable_checkpointing=False,
        default_root_dir=cfg.paths.output_dir,
        _convert_="object",
    )
