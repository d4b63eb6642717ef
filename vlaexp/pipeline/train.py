"""Stage `train`: fit the policy (or, with ``policy=value_fn``, the value function) on the
run's DataModule with the shared Trainer."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from vlaexp.data.datamodule import datamodule_from_config
from vlaexp.errors import ConfigError
from vlaexp.pipeline.context import RunContext
from vlaexp.policies.factory import make_policy
from vlaexp.training.checkpoint import LAST, PRETRAINED_DIR
from vlaexp.training.trainer import build_trainer
from vlaexp.value.model import make_value_function

log = logging.getLogger(__name__)


def check_dims(policy_cfg, datamodule) -> None:
    """The policy's state/action sizes must match the dataset's (named in the error)."""
    for setting, key in (
        ("policy.state_dim", datamodule.state_key),
        ("policy.action_dim", datamodule.action_key),
    ):
        want, have = policy_cfg[setting.split(".")[1]], datamodule.feature_dim(key)
        if want != have:
            raise ConfigError(f"{setting}={want} but the dataset's '{key}' has {have} dims")


def stage1_projector(ctx: RunContext) -> str | None:
    """This run's stage-1 projector, that stage 2 starts from: value_align's artifact when it
    ran in this call, its file when the run resumes (its checkpoint then holds the projector
    anyway, and co-training still reads stage 1's captions beside it); else None."""
    from vlaexp.value.align import OUT_DIR, PROJECTOR_FILE

    if "projector" in ctx.artifacts:
        return str(ctx.artifacts["projector"])
    own = ctx.run_dir / OUT_DIR / PROJECTOR_FILE
    return str(own) if ctx.artifacts.get("resume_from") and own.is_file() else None


def train_stage(ctx: RunContext) -> None:
    cfg = ctx.cfg
    datamodule = datamodule_from_config(cfg.data, cfg.policy, ctx.artifacts.get("dataset"))
    value_fn = cfg.policy.type == "value_fn"  # trained on the same DataModule, with value labels
    if value_fn:
        if not cfg.policy.projector_path:
            cfg.policy.projector_path = stage1_projector(ctx)
        policy = make_value_function(cfg.policy)
        if cfg.policy.cotrain_fraction > 0:
            from vlaexp.value.align import caption_batches

            policy.caption_batches = caption_batches(cfg.policy.projector_path, policy)
    else:
        check_dims(cfg.policy, datamodule)
        rvq = cfg.policy.type == "rvq_policy"
        if rvq and not cfg.policy.action_tokenizer and "tokenizer" in ctx.artifacts:
            # the tokenizer this run fitted (tokenizer_fit before train)
            cfg.policy.action_tokenizer = str(ctx.artifacts["tokenizer"])
        policy = make_policy(cfg.policy, dataset_stats=datamodule.stats)
    policy.train_config_yaml = OmegaConf.to_yaml(cfg)
    trainer = build_trainer(cfg, ctx.loggers, wrap=getattr(policy, "fsdp_blocks", ()))
    trainer.fit(policy, datamodule=datamodule, ckpt_path=ctx.artifacts.get("resume_from"))
    ctx.objects["datamodule"] = datamodule  # later stages of the run read it (preloaded once)
    ctx.metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
    ctx.metrics["train/global_step"] = float(trainer.global_step)
    last = ctx.run_dir / "checkpoints" / LAST / PRETRAINED_DIR
    if last.exists():
        ctx.artifacts["value_fn" if value_fn else "policy"] = last.resolve()
    else:
        log.info(
            "No checkpoint written (fast_dev_run or no steps): later stages use no trained policy"
        )
