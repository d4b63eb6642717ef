"""Registers every structured config in Hydra's ConfigStore.

Groups whose options share one type (camera, data, trainer, paths, eval) are typed by
the root :class:`~vlaexp.config.schema.VlaexpConfig`. Groups whose options differ in type
(policy, task_suite, tokenizer, each logger and callback) have one schema per option:
option files extend their schema through their defaults list, e.g. ``policy/bc.yaml``
starts with ``- /schema/policy@_here_: bc``, so a misspelt key in an option file or on the
command line is an error naming the full key.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from vlaexp.config import policy, schema, sim, tokenizer, training, value

_SCHEMAS: dict[str, dict[str, type]] = {
    "schema/policy": {
        "bc": policy.BCConfig,
        "pi0": policy.Pi0Config,
        "pi05": policy.Pi05Config,
        "rvq_policy": policy.RVQPolicyConfig,
        "value_fn": value.ValueFunctionConfig,
    },
    "schema/tokenizer": {
        "none": policy.TokenizerConfig,
        "rvq": tokenizer.RVQTokenizerConfig,
        "dct": tokenizer.DCTTokenizerConfig,
    },
    "schema/task_suite": {
        "tabletop": sim.TabletopSuiteConfig,
        "libero": sim.LiberoSuiteConfig,
        "robosuite": sim.RobosuiteSuiteConfig,
    },
    "schema/logger": {"wandb": training.WandbLoggerConfig, "csv": training.CSVLoggerConfig},
    "schema/callbacks": {
        "step_checkpoint": training.StepCheckpointConfig,
        "sim_eval": training.SimEvalConfig,
        "lr_monitor": training.LearningRateMonitorConfig,
        "rich_progress_bar": training.RichProgressBarConfig,
        "model_summary": training.ModelSummaryConfig,
        "ema": training.EMAConfig,
    },
}


def register_configs() -> None:
    """Idempotent: safe to call from the entry point and from tests."""
    from omegaconf import OmegaConf

    from vlaexp.training.distributed import launch_strftime

    # ${launch:%H-%M-%S}: like Hydra's ${now:}, but one time for every rank of a launch
    OmegaConf.register_new_resolver("launch", launch_strftime, use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="vlaexp_schema", node=schema.VlaexpConfig)
    for group, nodes in _SCHEMAS.items():
        for name, node in nodes.items():
            cs.store(group=group, name=name, node=node)
