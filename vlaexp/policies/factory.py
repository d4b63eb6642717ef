"""Policies by config `type`: build new ones, or load saved ones from ``pretrained_model/``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlaexp.config.policy import PolicyConfig
from vlaexp.errors import ConfigError, unknown_choice
from vlaexp.policies.base import VLAPolicy
from vlaexp.training.pretrained import load_state_strictly, read_pretrained, resolve_pretrained

# type -> "module:Class"; imported on use so listing policies stays cheap.
POLICIES: dict[str, str] = {
    "bc": "vlaexp.policies.bc:BCPolicy",
    "pi0": "vlaexp.policies.pi0.policy:Pi0Policy",
    "pi05": "vlaexp.policies.pi0.policy:Pi05Policy",
    "rvq_policy": "vlaexp.policies.rvq:RVQPolicy",
}


def policy_class(type_name: str) -> type[VLAPolicy]:
    if type_name not in POLICIES:
        raise unknown_choice("policy type", type_name, POLICIES)
    module, _, cls = POLICIES[type_name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _to_config(
    cls: type[VLAPolicy], cfg: DictConfig | dict[str, Any] | PolicyConfig
) -> PolicyConfig:
    """A typed config object; unknown keys or wrong types are errors naming the key."""
    if isinstance(cfg, PolicyConfig):
        return cfg
    schema = OmegaConf.structured(cls.config_class)
    merged = OmegaConf.merge(schema, cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def make_policy(
    cfg: DictConfig | dict[str, Any] | PolicyConfig,
    dataset_stats: dict[str, dict[str, np.ndarray]] | None = None,
) -> VLAPolicy:
    """A new policy from its config, or (with ``path``) one loaded from disk/hub."""
    type_name = cfg.type if not isinstance(cfg, dict) else cfg["type"]
    cls = policy_class(type_name)
    config = _to_config(cls, cfg)
    if config.path:
        policy = load_pretrained(config.path, setting="policy.path")
        if dataset_stats is not None:
            policy.normalizer.set_stats(dataset_stats)
        return policy
    return cls(config, dataset_stats)


def load_pretrained(path: str | Path, setting: str = "policy.path") -> VLAPolicy:
    """Rebuild a policy from a ``pretrained_model`` dir (or a run / hub id).

    The load is strict: any missing or unexpected weight is an error listing them, never a
    policy silently left with random weights.
    """
    directory = resolve_pretrained(path, setting)
    config_dict, state_dict, train_config = read_pretrained(directory)
    if "type" not in config_dict:
        raise ConfigError(f"{directory}/config.json has no 'type'; valid types: {sorted(POLICIES)}")
    cls = policy_class(config_dict["type"])
    config = _to_config(cls, config_dict)
    # the saved weights replace the ones training started from (a Pi0 checkpoint, an RVQ
    # policy's Pi0.5 backbone), which need not exist where the policy is loaded
    for start in ("pretrained", "backbone"):
        if getattr(config, start, None):
            setattr(config, start, None)
    policy = cls(config, assets_dir=directory)
    load_state_strictly(policy, state_dict, directory, f"'{config_dict['type']}' policy")
    policy.train_config_yaml = train_config
    return policy.eval()
