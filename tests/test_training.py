"""The shared Trainer, LeRobot-layout checkpoints, pretrained round trips and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from vlaexp.config.compose import resolved_run_config
from vlaexp.data.datamodule import datamodule_from_config
from vlaexp.policies.factory import load_pretrained, make_policy
from vlaexp.training.checkpoint import LeRobotCheckpointIO
from vlaexp.training.trainer import build_trainer


def _setup(overrides: list[str], run_dir: Path):
    cfg = resolved_run_config(overrides, run_dir)
    torch.manual_seed(cfg.seed)  # as run_experiment seeds before building anything
    dm = datamodule_from_config(cfg.data, cfg.policy)
    dm.setup("fit")
    policy = make_policy(cfg.policy, dataset_stats=dm.stats)
    return cfg, dm, policy


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fast_dev_run_trains_one_step_and_saves_nothing(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    cfg, dm, policy = _setup([*tiny_overrides, "debug=fdr", "logger=csv"], tmp_path / "run")
    before = _params(policy)
    trainer = build_trainer(cfg)
    trainer.fit(policy, datamodule=dm)
    assert trainer.global_step == 1
    changed = [
        k
        for k, v in policy.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert any(k.startswith("head.") for k in changed)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_checkpoints_have_lerobot_layout_and_reload_exactly(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg, dm, policy = _setup(
        [
            *tiny_overrides,
            "logger=csv",
            "trainer.max_steps=4",
            "callbacks.step_checkpoint.save_freq=2",
        ],
        run,
    )
    policy.train_config_yaml = "name: test\n"
    trainer = build_trainer(cfg)
    trainer.fit(policy, datamodule=dm)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["000002", "000004", "last"]
    assert os.readlink(ckpts / "last") == "000004"  # relative link
    pretrained = ckpts / "last" / "pretrained_model"
    assert {p.name for p in pretrained.iterdir()} == {
        "config.json",
        "model.safetensors",
        "normalization_stats.safetensors",
        "train_config.yaml",
    }
    state = ckpts / "000004" / "training_state"
    assert json.loads((state / "training_step.json").read_text())["step"] == 4
    assert {p.name for p in state.iterdir()} >= {
        "optimizer_state.safetensors",
        "optimizer_param_groups.json",
        "scheduler_state.json",
        "rng_state.safetensors",
    }
    assert json.loads((pretrained / "config.json").read_text())["type"] == "bc"

    loaded = load_pretrained(run)  # a run dir resolves to checkpoints/last/pretrained_model
    for k, v in policy.state_dict().items():
        assert torch.equal(v.cpu(), loaded.state_dict()[k]), k
    batch = next(iter(dm.val_dataloader()))
    policy.eval()
    torch.testing.assert_close(
        policy.predict_action_chunk(batch), loaded.predict_action_chunk(batch)
    )
    # Statistics travel with the weights: the loaded normalizer is the dataset's.
    torch.testing.assert_close(
        loaded.normalizer.action__mean,
        torch.as_tensor(dm.stats["action"]["mean"], dtype=torch.float32),
    )


def test_checkpoint_io_round_trips_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    sched.step()
    ckpt = {
        "state_dict": model.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "global_step": 7,
        "epoch": 2,
        "loops": {"x": 1},
        "vlaexp": {"policy_config": {"type": "bc"}, "train_config": None},
    }
    io = LeRobotCheckpointIO()
    torch.manual_seed(123)
    io.save_checkpoint(ckpt, tmp_path / "000007")
    expected_next = torch.rand(3)
    back = io.load_checkpoint(tmp_path / "000007")
    assert back["global_step"] == 7 and back["epoch"] == 2 and back["loops"] == {"x": 1}
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer_states"][0])
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(opt2.state_dict()["state"][0][k], v)
    assert back["lr_schedulers"][0]["last_epoch"] == 1
    from vlaexp.training.checkpoint import restore_rng_state

    torch.manual_seed(0)
    restore_rng_state(*back["vlaexp"]["rng_state"])
    assert torch.equal(torch.rand(3), expected_next)
    assert not (tmp_path / "000007.tmp").exists()


def test_checkpoint_io_keeps_name_keyed_optimizer_state(tmp_path: Path) -> None:
    """FSDP's full optimizer state is keyed by parameter name (with dots), not by index."""
    state = {
        "backbone.layer.0.weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)},
        "head.bias": {"step": torch.tensor(3.0), "exp_avg": torch.randn(2), "note": 1},
    }
    groups = [{"lr": 0.1, "params": ["backbone.layer.0.weight", "head.bias"]}]
    ckpt = {
        "state_dict": {"w": torch.zeros(1)},
        "optimizer_states": [{"state": state, "param_groups": groups}],
        "global_step": 3,
        "epoch": 0,
        "vlaexp": {"policy_config": {"type": "bc"}},
    }
    io = LeRobotCheckpointIO()
    io.save_checkpoint(ckpt, tmp_path / "000003")
    back = io.load_checkpoint(tmp_path / "000003")["optimizer_states"][0]
    assert list(back["state"]) == list(state) and back["param_groups"] == groups
    for name, values in state.items():
        for k, v in values.items():
            got = back["state"][name][k]
            assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got == v


def test_resume_continues_steps_optimizer_and_matches_uninterrupted_run(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    # One batch per epoch (batch >= train frames) makes the trajectory independent of
    # shuffling, so a resumed run must end exactly where an uninterrupted one does.
    base = [
        *tiny_overrides,
        "logger=csv",
        "data.batch_size=256",
        "callbacks.step_checkpoint.save_freq=3",
    ]
    cfg, dm, straight = _setup([*base, "trainer.max_steps=6"], tmp_path / "straight")
    build_trainer(cfg).fit(straight, datamodule=dm)

    run = tmp_path / "resumed"
    cfg, dm, first = _setup([*base, "trainer.max_steps=3"], run)
    build_trainer(cfg).fit(first, datamodule=dm)
    cfg, dm, second = _setup([*base, "trainer.max_steps=6"], run)
    trainer = build_trainer(cfg)
    trainer.fit(second, datamodule=dm, ckpt_path=run / "checkpoints" / "last")
    assert trainer.global_step == 6
    adam_steps = {float(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert adam_steps == {6.0}
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 6
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(second.state_dict()[k], v)
    assert os.readlink(run / "checkpoints" / "last") == "000006"


def test_load_pretrained_rejects_mismatched_weights(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    import pytest

    from vlaexp.errors import VlaexpError

    _, _, policy = _setup(tiny_overrides, tmp_path / "run")
    out = policy.save_pretrained(tmp_path / "pm")
    config = json.loads((out / "config.json").read_text())
    config["hidden_dim"] = 64  # the weights were made for 32
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises((VlaexpError, RuntimeError)) as err:
        load_pretrained(out)
    assert "head" in str(err.value)


def tiny_datamodule(root: Path, cameras: tuple[str, ...] = ("agentview",), **kwargs):
    """A LeRobotDataModule over ``root`` at 32 px, chunks of 4, in-process loading."""
    from vlaexp.data.datamodule import LeRobotDataModule

    return LeRobotDataModule(
        repo_id=None,
        root=root,
        cameras=list(cameras),
        camera_keys={c: f"observation.images.{c}" for c in cameras},
        chunk_size=4,
        image_size=32,
        num_workers=0,
        **kwargs,
    )


def test_preloaded_dataset_serves_the_same_samples(tiny_dataset: Path) -> None:
    def module(preload: bool):
        dm = tiny_datamodule(tiny_dataset, ("agentview", "wrist"), batch_size=8, preload=preload)
        dm.setup("fit")
        return dm

    lazy, loaded = module(False), module(True)
    assert len(loaded.datasets["train"]) == len(lazy.datasets["train"])
    assert loaded.datasets["train"].data["observation.images.wrist"].dtype == torch.uint8
    for i in (0, 7, len(lazy.datasets["train"]) - 1):  # the last one has a padded chunk
        a, b = lazy.datasets["train"][i], loaded.datasets["train"][i]
        assert a.keys() == b.keys()
        for k in a:
            if torch.is_tensor(a[k]):
                torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
            else:
                assert a[k] == b[k]
    assert loaded.train_dataloader().num_workers == 0
    # batches are gathered whole (one op per key) and equal the lazy loader's
    lazy_batch, loaded_batch = (
        next(iter(lazy.val_dataloader())),
        next(iter(loaded.val_dataloader())),
    )
    assert lazy_batch.keys() == loaded_batch.keys()
    for k, v in lazy_batch.items():
        if torch.is_tensor(v):
            assert loaded_batch[k].shape == v.shape and loaded_batch[k].dtype == v.dtype
            torch.testing.assert_close(loaded_batch[k], v, rtol=0, atol=1e-6)
        else:
            assert list(loaded_batch[k]) == list(v)


def test_preload_workers_fork_from_a_server_and_decode_the_same(tiny_dataset: Path) -> None:
    """The preload pass's workers start from a forkserver (one import of torch, LeRobot and
    vlaexp for all of them, not one per spawned worker) and store what a pass without
    workers stores."""
    from vlaexp.data import datamodule as dm_mod

    assert dm_mod.preload_worker_context(0) is None
    assert dm_mod.preload_worker_context(2).get_start_method() == "forkserver"
    assert dm_mod.preload_worker_context(2, "spawn").get_start_method() == "spawn"
    dm = tiny_datamodule(tiny_dataset, ("agentview", "wrist"), batch_size=8)
    dm.setup("fit")
    alone, workers = (dm_mod.PreloadedDataset(dm.datasets["val"], n, batch_size=4) for n in (0, 2))
    assert alone.data.keys() == workers.data.keys()
    for k, v in alone.data.items():
        if torch.is_tensor(v):
            assert torch.equal(workers.data[k], v), k
        else:
            assert workers.data[k] == v


def test_preload_decodes_every_split_it_keeps_in_one_pass(tiny_dataset: Path, monkeypatch) -> None:
    """One decoding pass (one start of its workers) per DataModule: train and val for a
    policy, every split for a value function (its eval and advantage stages read them all);
    the parts serve what the lazy splits do."""
    from vlaexp.data import datamodule as dm_mod

    passes = []
    real = dm_mod.PreloadedDataset.__init__

    def counted(self, source, *args, **kwargs):
        passes.append(len(source))
        real(self, source, *args, **kwargs)

    monkeypatch.setattr(dm_mod.PreloadedDataset, "__init__", counted)
    policy = tiny_datamodule(tiny_dataset, batch_size=8, preload=True)
    policy.setup("fit")
    sizes = {n: len(d) for n, d in policy.datasets.items()}
    assert passes == [sizes["train"] + sizes["val"]]
    assert not isinstance(policy.datasets["test"], dm_mod.PreloadedDataset)
    value = tiny_datamodule(tiny_dataset, batch_size=8, preload=True, value_labels=True)
    value.setup("fit")
    assert passes[1] == sum(len(d) for d in value.datasets.values())
    assert all(isinstance(d, dm_mod.PreloadedDataset) for d in value.datasets.values())
    lazy = tiny_datamodule(tiny_dataset, batch_size=8, value_labels=True)
    lazy.setup("fit")
    for name in ("train", "val", "test"):
        a, b = lazy.datasets[name], value.datasets[name]
        assert len(a) == len(b)
        for i in (0, len(a) - 1):
            assert a[i]["episode_index"] == b[i]["episode_index"]
            assert a[i]["frame_index"] == b[i]["frame_index"]
            torch.testing.assert_close(b[i]["value"], a[i]["value"])
            img = "observation.images.agentview"
            torch.testing.assert_close(b[i][img], a[i][img], rtol=0, atol=1e-6)


def test_ema_weights_are_what_checkpoints_save(tiny_overrides: list[str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "run"
    cfg, dm, policy = _setup(
        [
            *tiny_overrides,
            "logger=csv",
            "callbacks=ema",
            "callbacks.ema.decay=0.5",
            "trainer.max_steps=4",
            "callbacks.step_checkpoint.save_freq=2",
        ],
        run,
    )
    trainer = build_trainer(cfg)
    trainer.fit(policy, datamodule=dm)
    step = run / "checkpoints" / "000002"
    saved = load_file(step / "pretrained_model" / "model.safetensors")
    live = torch.load(step / "training_state" / "trainer_state.pt", weights_only=False)
    live = live["current_model_state"]
    key = "head.0.weight"
    assert not torch.equal(saved[key], live[key])  # the average, not the live weights
    # after training the policy holds the average, which is what `last` saved
    final = load_pretrained(run)
    torch.testing.assert_close(final.state_dict()[key], policy.state_dict()[key].cpu())


def test_splits_serve_exactly_their_episodes_frames(tiny_dataset: Path) -> None:
    """One dataset cut by frame ranges: each split yields every frame of its episodes once,
    in order, and an action chunk never runs into the next episode (it is padded instead)."""
    dm = tiny_datamodule(tiny_dataset)
    dm.setup("fit")
    assert 5 not in dm.splits["train"] + dm.splits["val"]  # the failed episode
    seen = set()
    for name, eps in dm.splits.items():
        ds = dm.datasets[name]
        items = [ds[i] for i in range(len(ds))]
        pairs = [(int(x["episode_index"]), int(x["frame_index"])) for x in items]
        assert pairs == [(e, f) for e in sorted(eps) for f in range(16)]  # 16 frames each
        last = items[15]  # the last frame of the first episode: 3 of its 4 actions are padding
        assert last["action_is_pad"].tolist() == [False, True, True, True]
        seen |= set(eps)
    assert seen | {5} == set(range(6))  # every episode but the failed one is served somewhere


def test_quantile_stats_are_the_datasets_own_not_a_mean_of_episodes(tiny_dataset: Path) -> None:
    """State dims 3-5 of the tiny dataset are constant within an episode (ep / 6): LeRobot's
    aggregated q01 and q99 are both their mean, a zero-width range that would clip every frame;
    the datamodule's are the 1% / 99% quantiles of all 96 frames."""
    from vlaexp.data.datamodule import open_metadata

    meta_state = open_metadata(None, tiny_dataset).stats["observation.state"]
    np.testing.assert_allclose(meta_state["q01"][3:6], meta_state["q99"][3:6], atol=1e-6)
    dm = tiny_datamodule(tiny_dataset)
    frames = [(e, i / 16) for e in range(6) for i in range(16)]
    state = np.array([[t, t, t, e / 6, e / 6, e / 6, 0.02, 0.02] for e, t in frames])
    stats = dm.stats["observation.state"]
    np.testing.assert_allclose(stats["q01"], np.quantile(state, 0.01, axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["q99"], np.quantile(state, 0.99, axis=0), atol=1e-6)
    assert stats["q01"][3] == 0.0 and abs(stats["q99"][3] - 5 / 6) < 0.01
    np.testing.assert_array_equal(stats["mean"], meta_state["mean"])  # the rest is LeRobot's
    assert (dm.stats["action"]["q99"] - dm.stats["action"]["q01"])[:3].min() > 1.9  # sin: +-1
