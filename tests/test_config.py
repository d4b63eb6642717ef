"""Every config composes, every experiment builds its parts, and bad input is explained."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlaexp.config.compose import (
    check_overrides,
    compose_config,
    group_options,
    resolved_run_config,
)
from vlaexp.errors import ConfigError

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml")
)


# Experiments on full-size published weights (hub only) are checked with their tiny twin.
# the GPU value runs on the CPU: no stage-1 projector (value_align gives it in a real run)
GPU_VALUE_TWIN = [
    "policy.require_projector=false",
    "trainer=cpu",
    "data.batch_size=8",
    "data.num_workers=0",
]
TINY_TWIN = {
    "rnd_spatial_agentview": ["policy=pi05_tiny", "policy.pretrained=null", "trainer=cpu"],
    # small widths for CPU; the stage-1 projector comes from value_align in a real run
    "rvq_policy_tabletop_spatial": ["policy=rvq_policy_tiny", "trainer=cpu"],
    "value_tabletop": ["policy.require_projector=false"],
    "advantage_tabletop_value": GPU_VALUE_TWIN,
    "advantage_tabletop_jitter_value": GPU_VALUE_TWIN,
    "value_tabletop_gpu": GPU_VALUE_TWIN,
    "value_tabletop_perturbed": GPU_VALUE_TWIN,
    "value_tabletop_perturbed_time": GPU_VALUE_TWIN,
    "value_tabletop_perturbed_time_drop": GPU_VALUE_TWIN,
    "value_tabletop_perturbed_time_drop_history": GPU_VALUE_TWIN,
}


def _resolved(overrides: list[str], tmp_path: Path):
    return resolved_run_config(overrides, tmp_path / "run", cwd=tmp_path)


def test_experiment_files_are_found() -> None:
    assert "quickstart" in EXPERIMENTS
    assert group_options("experiment") == EXPERIMENTS


@pytest.mark.parametrize(
    "pair",
    [
        ("advantage_tabletop_value", "advantage_tabletop"),  # RECAP: value run and both arms
        ("advantage_tabletop_jitter_value", "advantage_tabletop_jitter"),  # on jittery demos
        ("rvq_policy_tabletop_spatial", "tabletop_spatial"),  # RVQ policy and its flow Pi0.5
        ("value_tabletop_perturbed_time", "value_tabletop_perturbed"),  # the time input's A/B
        ("value_tabletop_perturbed_time_drop", "value_tabletop_perturbed"),  # and its dropout
        ("value_tabletop_perturbed_time_drop_history", "value_tabletop_perturbed"),  # and history
    ],
)
def test_compared_experiments_record_one_dataset(pair: tuple[str, str]) -> None:
    """Experiments compared with one another read the same recording."""
    from vlaexp.pipeline.collect import dataset_spec

    a, b = (compose_config([f"+experiment={e}"]) for e in pair)
    assert dataset_spec(a) == dataset_spec(b)
    assert dataset_spec(a) != dataset_spec(compose_config(["+experiment=quickstart"]))
    # how many processes record and write it is not part of the key
    faster = compose_config(
        [f"+experiment={pair[0]}", "data.collect.n_workers=7", "data.collect.writers=3"]
    )
    assert dataset_spec(faster) == dataset_spec(a)


def test_jitter_mix_differs_from_the_fault_mix_in_its_degraded_demos_only() -> None:
    fault, jitter = (
        compose_config([f"+experiment={e}"])
        for e in ("advantage_tabletop", "advantage_tabletop_jitter")
    )
    p = jitter.task_suite.perturbation
    assert (p.action_noise, p.action_noise_prob) == (0.1, 0.5)
    assert not (p.early_release or p.wrong_target or p.freeze)
    assert jitter.data.collect == fault.data.collect  # same demos a task, same DART noise


def test_advantage_arms_train_on_the_unfiltered_mix() -> None:
    policy = compose_config(["+experiment=advantage_tabletop"])
    assert policy.task_suite.perturbation.fault_prob == 0.5  # a mix, not only failures
    assert not policy.data.train_success_only and not policy.policy.advantage.enabled


def test_rvq_experiment_takes_the_flow_recipe() -> None:
    """The RVQ policy is compared with tabletop_spatial's Pi0.5 at the same backbone and
    recipe: same patch size, augmentation and schedule, batch-1 evaluation for latencies."""
    rvq, flow = (
        compose_config([f"+experiment={e}"])
        for e in ("rvq_policy_tabletop_spatial", "tabletop_spatial")
    )
    assert rvq.policy.type == "rvq_policy" and flow.policy.type == "pi05"
    for k in ("vision", "vlm", "augment"):
        assert rvq.policy[k] == flow.policy[k], k
    assert rvq.trainer.max_steps == flow.trainer.max_steps and rvq.eval.n_envs == 1


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_policy_datamodule_trainer(
    experiment: str, tiny_data: list[str], tmp_path: Path
) -> None:
    overrides = [f"+experiment={experiment}", *TINY_TWIN.get(experiment, [])]
    cfg = _resolved([*overrides, "debug=fdr", *tiny_data, "logger=csv"], tmp_path)
    assert cfg.name == experiment and cfg.debug_mode == "fdr"
    from vlaexp.data.datamodule import datamodule_from_config
    from vlaexp.policies.factory import make_policy
    from vlaexp.training.trainer import build_trainer

    dm = datamodule_from_config(cfg.data, cfg.policy)
    dm.setup("fit")
    if cfg.policy.type == "value_fn":
        from vlaexp.value.model import make_value_function

        policy = make_value_function(cfg.policy)
    else:
        if cfg.policy.type == "rvq_policy":  # the tokenizer_fit stage's output, in its format
            from tests.test_rvq_policy import fitted_tokenizer

            path = fitted_tokenizer(tmp_path, ["tokenizer=rvq"], steps=1)
            OmegaConf.update(cfg, "policy.action_tokenizer", str(path))
        policy = make_policy(cfg.policy, dataset_stats=dm.stats)
    trainer = build_trainer(cfg)
    assert trainer.fast_dev_run == 1
    batch = next(iter(dm.train_dataloader()))
    for cam in cfg.policy.cameras:
        assert batch[f"observation.images.{cam}"].shape[-2:] == (cfg.policy.image_size,) * 2
    loss, _ = policy(batch)
    assert loss.ndim == 0 and loss.requires_grad


def test_every_group_option_composes() -> None:
    for group in (
        "policy",
        "task_suite",
        "camera",
        "tokenizer",
        "data",
        "trainer",
        "logger",
        "callbacks",
        "debug",
    ):
        for option in group_options(group):
            cfg = compose_config([f"{group}={option}"])
            assert cfg is not None


def test_experiment_is_not_in_defaults() -> None:
    cfg = compose_config([])
    assert cfg.name == "adhoc"
    assert compose_config(["+experiment=quickstart"]).name == "quickstart"


def test_trainer_presets_set_what_they_promise() -> None:
    cpu = compose_config(["trainer=cpu"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.gradient_clip_val) == ("cpu", 1, 1.0)
    ddp = compose_config(["trainer=ddp"]).trainer
    assert ddp.strategy._target_.endswith("DDPStrategy") and ddp.strategy.gradient_as_bucket_view
    fsdp = compose_config(["trainer=fsdp"]).trainer
    assert fsdp.strategy._target_.endswith("FSDPStrategy") and fsdp.precision == "bf16-mixed"


def test_wandb_is_offline_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_config([]).logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config([]).logger.wandb.mode == "online"
    assert compose_config(["logger.wandb.mode=disabled"]).logger.wandb.mode == "disabled"


def test_loggers_and_callbacks_are_removable() -> None:
    cfg = compose_config(["logger=none", "callbacks.lr_monitor=null"])
    assert len(cfg.logger) == 0
    assert cfg.callbacks.lr_monitor is None and cfg.callbacks.step_checkpoint is not None


def test_callbacks_and_csv_logger_instantiate(tmp_path: Path) -> None:
    cfg = _resolved(["logger=csv"], tmp_path)
    from vlaexp.training.checkpoint import StepCheckpoint
    from vlaexp.training.trainer import build_callbacks

    callbacks = build_callbacks(cfg)
    assert any(isinstance(c, StepCheckpoint) for c in callbacks)
    logger = instantiate(cfg.logger.csv)
    assert (
        Path(logger.log_dir).parent == tmp_path / "run" / "csv"
        or tmp_path in Path(logger.log_dir).parents
    )


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["+experiment=quickstrat"],
            ["Unknown experiment 'quickstrat'", "Did you mean 'quickstart'", "quickstart"],
        ),
        (["policy=bcc"], ["Unknown policy option 'bcc'", "Did you mean 'bc'"]),
        (["trainer=cpu,gpux"], ["Unknown trainer option 'gpux'", "Did you mean 'gpu'"]),
        (["camera=agentvew"], ["Did you mean 'agentview'", "both", "wrist"]),
        (
            ["policy.hiden_dim=3"],
            ["Unknown config key 'policy.hiden_dim'", "Did you mean 'policy.hidden_dim'"],
        ),
        (["policy.lr=0.1"], ["'policy.lr'", "Did you mean 'policy.optimizer.lr'"]),
        (["trainer.max_step=5"], ["'trainer.max_step'", "Did you mean 'trainer.max_steps'"]),
        (["seed=abc"], ["Wrong type for config key 'seed'", "Integer"]),
        (
            ["policy.optimizer.lr=fast"],
            ["Wrong type for config key 'policy.optimizer.lr'", "Float"],
        ),
        (["+experiment=quickstart", "data.batch_size=big"], ["'data.batch_size'"]),
    ],
)
def test_bad_overrides_are_explained(overrides: list[str], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(overrides)
    for text in expected:
        assert text in str(err.value)


def test_good_overrides_pass() -> None:
    check_overrides(
        [
            "+experiment=quickstart",
            "policy.num_inference_steps=5",
            "camera=agentview,wrist",
            "seed=3",
        ]
    )


def test_unknown_stage_is_explained() -> None:
    from vlaexp.pipeline.registry import validate_stages

    with pytest.raises(ConfigError, match=r"Unknown stage 'trian'\. Did you mean 'train'"):
        validate_stages(["collect", "trian"])


def test_missing_dataset_root_names_path_and_setting(tmp_path: Path) -> None:
    from vlaexp.data.datamodule import datamodule_from_config

    cfg = _resolved(["data=lerobot", f"data.root={tmp_path}/nope", "data.repo_id=x/y"], tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        datamodule_from_config(cfg.data, cfg.policy)
    assert f"{tmp_path}/nope" in str(err.value) and "data.root" in str(err.value)


def test_missing_camera_key_lists_dataset_images(tiny_data: list[str], tmp_path: Path) -> None:
    from vlaexp.data.datamodule import datamodule_from_config

    cfg = _resolved([*tiny_data, "data.camera_keys.wrist=observation.images.hand"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.camera_keys.wrist.*observation.images.agentview"):
        datamodule_from_config(cfg.data, cfg.policy)


def test_missing_checkpoint_names_path_and_setting(tmp_path: Path) -> None:
    from vlaexp.policies.factory import load_pretrained

    with pytest.raises(FileNotFoundError) as err:
        load_pretrained(tmp_path / "no_run")
    assert "no_run" in str(err.value) and "policy.path" in str(err.value)


def test_policy_state_dim_mismatch_names_setting(tiny_overrides: list[str], tmp_path: Path) -> None:
    from vlaexp.data.datamodule import datamodule_from_config
    from vlaexp.pipeline.train import check_dims

    cfg = _resolved([*tiny_overrides, "policy.state_dim=9"], tmp_path)
    with pytest.raises(ConfigError, match=r"policy.state_dim=9 .* 8 dims"):
        check_dims(cfg.policy, datamodule_from_config(cfg.data, cfg.policy))
