"""The distributional value function: the tiny model's outputs, both losses, overfitting,
the last-token readout, save/reload, clear errors, labels through the DataModule, and the
full-size architecture on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import SiglipVisionModel

from vlaexp.config.compose import compose_config
from vlaexp.errors import ConfigError, MissingPathError, VlaexpError
from vlaexp.value.labels import episode_labels
from vlaexp.value.model import ValueFunction, load_value_function, make_value_function

CAMERAS = ["agentview", "wrist"]
TASKS = [
    "pick up the red cube to the left of the plate and place it on the plate",
    "pick up the red cube",
    "place it on the plate",
    "pick up the red cube to the right of the plate",
]


def value_cfg(name: str = "value_fn_tiny", *overrides: str) -> dict:
    cfg = compose_config([f"policy={name}", "camera=both", *overrides])
    return OmegaConf.to_container(cfg.policy, resolve=True)  # type: ignore[return-value]


def tiny(*overrides: str, seed: int = 0) -> ValueFunction:
    torch.manual_seed(seed)
    return make_value_function(value_cfg("value_fn_tiny", *overrides))


def make_batch(b: int = 4, size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        f"observation.images.{c}": torch.rand(b, 3, size, size, generator=g) * 2 - 1
        for c in CAMERAS
    }
    batch["task"] = [TASKS[i % len(TASKS)] for i in range(b)]
    batch["value"] = -torch.rand(b, generator=g)
    return batch


def countdown_batch() -> dict:
    """A countdown to a 220-step limit (what a failure run to the limit is labelled): the same
    images at six steps, so only the step tells the labels apart."""
    steps = torch.tensor([0, 40, 80, 120, 160, 200])
    same = make_batch(b=1, seed=2)
    batch = {k: v.expand(6, *v.shape[1:]) for k, v in same.items() if torch.is_tensor(v)}
    batch["task"] = same["task"] * 6
    batch["frame_index"] = steps
    batch["value"] = -(220 - steps.float()) / 220
    return batch


def overfit(model: ValueFunction, batch: dict, steps: int) -> tuple[torch.Tensor, dict]:
    """AdamW at 1e-3 on one fixed batch; the last step's loss and metrics."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        loss, info = model(batch)
        loss.backward()
        optimizer.step()
    return loss, info


def test_tiny_outputs_are_distributions_over_201_bins_with_values_in_range() -> None:
    model = tiny().eval()
    batch = make_batch(b=3)
    logits = model.logits(batch)
    assert logits.shape == (3, 201)
    out = model.predict_value(batch)
    assert out["probs"].shape == (3, 201) and out["expected"].shape == (3,)
    assert torch.allclose(out["probs"].sum(-1), torch.ones(3), atol=1e-5)
    assert ((out["expected"] >= -1) & (out["expected"] <= 0)).all()
    centers = torch.linspace(-1, 0, 201)
    assert torch.allclose(out["expected"], (out["probs"] * centers).sum(-1))
    # the images matter: other pixels, other logits
    other = {**batch, "observation.images.wrist": -batch["observation.images.wrist"]}
    assert not torch.allclose(model.logits(other), logits)


def test_augmentation_applies_in_training_only_when_enabled() -> None:
    batch = make_batch(b=3)
    plain = tiny().train()
    assert torch.equal(plain.logits(batch), plain.logits(batch))  # off by default
    model = tiny("policy.augment.enabled=true")
    model.eval()
    evaluated = model.logits(batch)
    assert torch.equal(model.logits(batch), evaluated)  # never at evaluation
    model.train()
    torch.manual_seed(1)
    first = model.logits(batch)
    assert not torch.allclose(first, evaluated)  # training images are perturbed...
    assert not torch.allclose(model.logits(batch), first)  # ...afresh each time


@pytest.mark.parametrize("loss", ["ce", "hl_gauss"])
def test_both_losses_have_finite_gradients_and_overfit_a_fixed_batch(loss: str) -> None:
    model = tiny(f"policy.loss={loss}").train()
    batch = make_batch(b=4)
    first, _ = model(batch)
    first.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # every part of the stitched network is trained by the loss
    for part in (model.vision, model.projector, model.lm, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    loss_value, info = overfit(model, batch, 100)
    assert loss_value.item() < 0.3 * first.item()
    assert info["mae"] < 0.1  # the expected value lands near each frame's label


def test_readout_is_the_last_real_token_whatever_the_padding() -> None:
    model = tiny().eval()
    batch = make_batch(b=4)
    short = model.predict_value(batch)["expected"]
    model.config.tokenizer_max_length = 40  # the same texts with 16 more pad tokens
    long = model.predict_value(batch)["expected"]
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)
    # one sample alone (padded to the batch's length or not) gets the value it gets in a batch
    alone = {k: v[1:2] for k, v in batch.items() if torch.is_tensor(v)}
    alone["task"] = batch["task"][1:2]
    torch.testing.assert_close(model.predict_value(alone)["expected"], long[1:2], atol=1e-5, rtol=0)
    # the readout is not the padded end of the sequence: the text itself changes the value
    other = {**batch, "task": ["pick up the red cube on the left"] * 4}
    assert not torch.allclose(model.predict_value(other)["expected"], long)


def test_save_reload_gives_identical_predictions_offline(tmp_path: Path) -> None:
    model = tiny(seed=3).eval()
    batch = make_batch(b=3, seed=1)
    directory = model.save_pretrained(tmp_path / "pretrained_model")
    assert (directory / "tokenizer" / "tokenizer.json").is_file()
    reloaded = load_value_function(directory)
    assert not reloaded.training and reloaded.config == model.config
    a, b = model.predict_value(batch), reloaded.predict_value(batch)
    torch.testing.assert_close(a["probs"], b["probs"], atol=0, rtol=0)
    # training further from it keeps its weights
    again = make_value_function({**value_cfg(), "path": str(directory)})
    torch.testing.assert_close(again.head.weight, model.head.weight, atol=0, rtol=0)


def test_a_checkpoint_with_other_bins_is_refused(tmp_path: Path) -> None:
    directory = tiny().save_pretrained(tmp_path / "pm")
    with pytest.raises(ConfigError, match=r"policy.n_bins=101 .* trained with n_bins=201"):
        make_value_function({**value_cfg(), "n_bins": 101, "path": str(directory)})
    with pytest.raises(ConfigError, match=r"policy.value_range=\[-1.0, 1.0\]"):
        make_value_function({**value_cfg(), "value_range": [-1.0, 1.0]})
    # a config.json that disagrees with the weights it sits beside
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "n_bins": 101}))
    with pytest.raises(
        VlaexpError, match=r"do not fit the value function of its config.json \(n_bins=101"
    ):
        load_value_function(directory)


def test_time_input_reads_the_episode_step_and_learns_a_countdown_the_frames_lack(
    tmp_path: Path,
) -> None:
    batch = countdown_batch()

    def fitted(*overrides: str) -> tuple[ValueFunction, float]:
        model = tiny(*overrides).train()
        _, info = overfit(model, batch, 120)
        return model.eval(), info["mae"]

    timed, timed_mae = fitted("policy.time_horizon=220")
    blind, blind_mae = fitted()
    assert blind.time_embed is None
    assert blind_mae > 0.2  # without the step, one value for six labels spread over [-1, -0.09]
    assert timed_mae < 0.1
    predicted = timed.predict_value(batch)["expected"]
    assert (predicted.diff() > 0).all()  # later steps, higher values
    # a batch without the step is a clear error, not a silent blind prediction
    with pytest.raises(VlaexpError, match=r"policy.time_horizon=220.*no 'frame_index'"):
        timed.logits({k: v for k, v in batch.items() if k != "frame_index"})
    # the horizon is part of what the checkpoint means: it reloads with it, and another is refused
    directory = timed.save_pretrained(tmp_path / "pm")
    torch.testing.assert_close(
        load_value_function(directory).predict_value(batch)["expected"], predicted, atol=0, rtol=0
    )
    with pytest.raises(
        ConfigError, match=r"policy.time_horizon=100 .* trained with time_horizon=220"
    ):
        make_value_function({**value_cfg(), "time_horizon": 100, "path": str(directory)})
    with pytest.raises(ConfigError, match=r"policy.time_horizon must be a positive step count"):
        tiny("policy.time_horizon=0")


def motion_batch() -> dict:
    """Six samples whose current frames are one image and whose earlier frames differ: three
    came from a still scene (the same image), three from a moving one (another image), labelled
    -0.1 and -0.9. Only the earlier frame tells them apart."""
    now, before = make_batch(b=1, seed=3), make_batch(b=1, seed=4)
    batch = {}
    for cam in CAMERAS:
        key = f"observation.images.{cam}"
        still = torch.stack([now[key][0], now[key][0]])  # [T=2, 3, S, S], the oldest first
        moving = torch.stack([before[key][0], now[key][0]])
        batch[key] = torch.stack([still] * 3 + [moving] * 3)
    batch["task"] = now["task"] * 6
    batch["value"] = torch.tensor([-0.1] * 3 + [-0.9] * 3)
    return batch


def test_frame_history_tells_apart_frames_that_differ_only_in_how_they_moved(
    tmp_path: Path,
) -> None:
    batch = motion_batch()
    current = {k: v[:, -1] if k.startswith("observation.images.") else v for k, v in batch.items()}
    model = tiny("policy.frame_history=[4]").train()
    _, info = overfit(model, batch, 80)
    blind = tiny().train()
    _, blind_info = overfit(blind, current, 80)
    assert blind_info["mae"] > 0.3  # one value for labels 0.8 apart
    assert info["mae"] < 0.1
    model.eval()
    expected = model.predict_value(batch)["expected"]
    assert (expected[:3] > expected[3:] + 0.5).all()
    # each frame enters as image tokens of its own: T times a camera's
    n = model.image_tokens(batch["observation.images.agentview"][:1, :1]).shape[1]
    two = model.image_tokens(batch["observation.images.agentview"][:1]).shape[1]
    assert two == 2 * n
    # single frames to a model that reads two is a clear error, as is the reverse
    with pytest.raises(VlaexpError, match=r"float\[B, 2, 3, 32, 32\].*frame_history=\[4\]"):
        model.logits(current)
    with pytest.raises(VlaexpError, match=r"float\[B, 3, 32, 32\] \(policy.image_size\)"):
        blind.logits(batch)
    # what the history is belongs to the checkpoint: it reloads with it, another is refused
    directory = model.save_pretrained(tmp_path / "pm")
    torch.testing.assert_close(
        load_value_function(directory).predict_value(batch)["expected"], expected, atol=0, rtol=0
    )
    with pytest.raises(ConfigError, match=r"policy.frame_history=\[2\] .* trained with"):
        make_value_function({**value_cfg(), "frame_history": [2], "path": str(directory)})
    for bad in ("[0]", "[4,4]", "[-1]"):
        with pytest.raises(ConfigError, match=r"policy.frame_history lists distinct steps back"):
            tiny(f"policy.frame_history={bad}")


def test_frame_history_augments_a_samples_frames_alike() -> None:
    from vlaexp.data.transforms import augment_images

    frame = torch.rand(4, 3, 32, 32) * 2 - 1
    frames = torch.stack([frame, frame], dim=1)  # [B, T=2, ...]: each sample's frames equal
    out = augment_images(frames, generator=torch.Generator().manual_seed(0))
    assert out.shape == frames.shape
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=0, rtol=0)  # one crop, one jitter
    assert not torch.allclose(out[0, 0], out[1, 0])  # but each sample its own
    # a sample's frames draw what its single frame would: the same generator, the same result
    single = augment_images(frame, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], single, atol=1e-6, rtol=0)
    model = tiny("policy.frame_history=[4]", "policy.augment.enabled=true").train()
    images = model._images({f"observation.images.{c}": frames for c in CAMERAS})
    assert images.shape == (2, 4, 2, 3, 32, 32) and not torch.equal(images[0], frames)
    torch.testing.assert_close(images[:, :, 0], images[:, :, 1], atol=0, rtol=0)


def test_datamodule_gives_each_frame_its_earlier_frames_clamped_to_its_episode(
    collected: Path,
) -> None:
    dm = value_datamodule(collected, policy=("policy.frame_history=[1,3]",))
    dm.setup("fit")
    plain = value_datamodule(collected)
    plain.setup("fit")
    key = "observation.images.agentview"
    for name in ("train", "test"):
        frames = {  # the current frame of each (episode, step), from the plain DataModule
            (int(s["episode_index"]), int(s["frame_index"])): s[key] for s in plain.datasets[name]
        }
        n = 0
        for sample in dm.datasets[name]:
            ep, t = int(sample["episode_index"]), int(sample["frame_index"])
            images = sample[key]
            assert images.shape == (3, 3, 32, 32)  # t - 3, t - 1, t
            for i, back in enumerate((3, 1, 0)):
                torch.testing.assert_close(images[i], frames[(ep, max(t - back, 0))])
            n += 1
        assert n == len(frames)
    batch = next(iter(dm.train_dataloader()))
    model = tiny("policy.frame_history=[1,3]")
    loss, _ = model(batch)
    assert torch.isfinite(loss)


def test_time_dropout_trains_one_model_to_predict_with_and_without_the_step(
    tmp_path: Path,
) -> None:
    batch = countdown_batch()
    model = tiny("policy.time_horizon=220", "policy.time_dropout=0.5")
    # in training, each sample sees either its step or the "step unknown" token, about half each
    wide = make_batch(b=64, seed=3)
    wide["frame_index"] = torch.arange(64) * 3
    with torch.no_grad():
        seen = model.train().logits(wide)
        model.eval()
        with_step, without = model.logits(wide), model.logits(wide, use_step=False)
    as_with = (seen - with_step).abs().amax(-1) < 1e-5
    as_without = (seen - without).abs().amax(-1) < 1e-5
    assert not (with_step - without).abs().amax(-1).lt(1e-5).any()  # the two are told apart
    assert (as_with ^ as_without).all() and 0.3 < as_without.float().mean() < 0.7
    # fitted on a countdown over identical frames: with the step it ranks the steps; without
    # it, it can only give the labels' mean
    torch.manual_seed(0)
    overfit(model.train(), batch, 200)
    model.eval()
    timed = model.predict_value(batch)["expected"]
    blind = model.predict_value(batch, use_step=False)["expected"]
    assert (timed - batch["value"]).abs().mean() < 0.1 and (timed.diff() > 0).all()
    assert (blind - batch["value"].mean()).abs().max() < 0.1
    # it reloads with its "step unknown" token, and predicts the same without the step
    directory = model.save_pretrained(tmp_path / "pm")
    torch.testing.assert_close(
        load_value_function(directory).predict_value(batch, use_step=False)["expected"], blind
    )
    # clear errors: no step to drop, a share out of range, no trained token to predict without
    # the step, or to train further with dropout
    with pytest.raises(ConfigError, match=r"time_dropout=0.5 drops the step token.*time_horizon"):
        tiny("policy.time_dropout=0.5")
    with pytest.raises(ConfigError, match=r"policy.time_dropout must be in \[0, 1\)"):
        tiny("policy.time_horizon=220", "policy.time_dropout=1.0")
    plain = tiny("policy.time_horizon=220").eval()
    with pytest.raises(VlaexpError, match=r"trained with policy.time_dropout=0"):
        plain.logits(batch, use_step=False)
    plain_dir = plain.save_pretrained(tmp_path / "plain")
    cfg = {**value_cfg(), "time_horizon": 220, "time_dropout": 0.3, "path": str(plain_dir)}
    with pytest.raises(ConfigError, match=r"trained without it and has no 'step unknown' token"):
        make_value_function(cfg)


def test_missing_camera_and_bad_inputs_are_clear_errors() -> None:
    model = tiny().eval()
    batch = make_batch(b=2)
    del batch["observation.images.wrist"]
    with pytest.raises(
        VlaexpError, match=r"needs camera 'wrist'.*batch has \['observation.images.agentview'\]"
    ):
        model.predict_value(batch)
    batch = make_batch(b=2, size=48)
    with pytest.raises(VlaexpError, match=r"must be float\[B, 3, 32, 32\].*got \[2, 3, 48, 48\]"):
        model.predict_value(batch)
    batch = make_batch(b=2)
    batch["value"] = torch.tensor([-0.5, 0.5])
    with pytest.raises(VlaexpError, match=r"values must lie in policy.value_range"):
        model(batch)


def test_pretrained_parts_load_strictly_and_missing_paths_are_named(tmp_path: Path) -> None:
    donor = tiny(seed=7)
    siglip = SiglipVisionModel(donor.vision.vision_model.config)
    siglip.vision_model.load_state_dict(donor.vision.vision_model.state_dict())
    siglip.save_pretrained(tmp_path / "siglip")
    donor.lm.save_pretrained(tmp_path / "gemma")
    model = tiny(
        f"policy.vision_pretrained={tmp_path / 'siglip'}",
        f"policy.lm_pretrained={tmp_path / 'gemma'}",
        seed=0,
    )
    for mine, theirs in ((model.vision, donor.vision), (model.lm, donor.lm)):
        for (name, a), (_, b) in zip(
            mine.state_dict().items(), theirs.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    with pytest.raises(MissingPathError, match=r"nowhere/siglip.*policy.vision_pretrained"):
        tiny(f"policy.vision_pretrained={tmp_path / 'nowhere' / 'siglip'}")
    with pytest.raises(VlaexpError, match=r"policy.lm_pretrained"):  # weights of other widths
        tiny(f"policy.lm_pretrained={tmp_path / 'gemma'}", "policy.lm.hidden_size=64")


def test_full_size_architecture_on_the_meta_device() -> None:
    cfg = value_cfg("value_fn", "policy.tokenizer=tabletop")  # the hub's tokenizer is offline
    with torch.device("meta"):
        model = make_value_function(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 400e6 < count(model.vision) < 450e6  # SigLIP So400m/14 without its pooling head
    assert 260e6 < count(model.lm) < 280e6  # Gemma-3-270M, 168M of it the embedding
    assert count(model.lm.embed_tokens) == 262144 * 640
    assert [type(m).__name__ for m in model.projector] == ["Linear", "GELU", "Linear"]
    assert (model.projector[0].in_features, model.projector[0].out_features) == (1152, 1152)
    assert (model.projector[2].in_features, model.projector[2].out_features) == (1152, 640)
    assert isinstance(model.head, torch.nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (640, 201)
    lm = model.lm.config
    assert (lm.num_hidden_layers, lm.num_attention_heads, lm.num_key_value_heads) == (18, 4, 1)
    assert (lm.head_dim, lm.intermediate_size) == (256, 2048)
    vision = model.vision.vision_model.config
    assert (vision.image_size, vision.patch_size, vision.hidden_size) == (384, 14, 1152)


# ----- labels through the DataModule ---------------------------------------------------------


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 scripted tabletop episodes at 32 px (two tasks); episode 1 marked failed."""
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.data.episodes import EPISODES_SIDECAR
    from vlaexp.sim.factory import make_task_suite

    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"]).task_suite
    suite = make_task_suite(OmegaConf.create(OmegaConf.to_container(cfg)), CAMERAS)
    root = tmp_path_factory.mktemp("value") / "spatial"
    collect_demonstrations(suite, root, "test/value", CAMERAS, 2, task_ids=[0, 1], use_videos=False)
    sidecar = root / EPISODES_SIDECAR
    records = [json.loads(line) for line in sidecar.read_text().splitlines()]
    records[1]["success"] = False
    sidecar.write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def value_datamodule(root: Path, *overrides: str, policy: tuple[str, ...] = ()):
    from vlaexp.data.datamodule import datamodule_from_config

    cfg = compose_config(
        [
            "policy=value_fn_tiny",
            "camera=both",
            "data=lerobot",
            f"data.root={root}",
            "data.camera_keys.agentview=observation.images.agentview",
            "data.camera_keys.wrist=observation.images.wrist",
            "data.num_workers=0",
            "data.batch_size=8",
            *overrides,
        ]
    )
    return datamodule_from_config(cfg.data, OmegaConf.create(value_cfg("value_fn_tiny", *policy)))


def test_datamodule_attaches_each_frames_value_label(collected: Path) -> None:
    from vlaexp.data.episodes import read_episode_records

    dm = value_datamodule(collected)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 2, "val": 1, "test": 1}
    assert any(1 in eps for eps in dm.splits.values())  # the failed episode is kept
    records = read_episode_records(collected)
    tasks = {r["episode_index"]: r["instruction"] for r in records}
    expected = {
        lab["episode_index"]: lab["values"]
        for lab in episode_labels([{**r, "task": r["instruction"]} for r in records])
    }
    seen = 0
    for name in ("train", "val", "test"):
        for sample in dm.datasets[name]:
            ep, t = int(sample["episode_index"]), int(sample["frame_index"])
            assert sample["task"] == tasks[ep]
            assert float(sample["value"]) == pytest.approx(expected[ep][t], abs=1e-6)
            seen += 1
    assert seen == sum(r["length"] for r in records)
    assert expected[1][-1] < -0.4  # the failed episode ends at -c_fail / max length, not 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["value"].dtype == torch.float32 and batch["value"].shape == (8,)
    model = tiny()
    loss, _ = model(batch)
    assert torch.isfinite(loss)
    # the batches carry each frame's step, which a time-reading value function embeds
    timed = tiny("policy.time_horizon=220").eval()
    logits = timed.logits(batch)
    later = timed.logits({**batch, "frame_index": batch["frame_index"] + 50})
    assert not torch.allclose(logits, later)


def test_datamodule_errors_name_missing_cameras_and_success_flags(
    collected: Path, tmp_path: Path
) -> None:
    from vlaexp.data.datamodule import LeRobotDataModule

    with pytest.raises(
        ConfigError, match=r"Dataset has no image feature 'observation.images.side'"
    ):
        LeRobotDataModule(
            None,
            collected,
            ["agentview", "side"],
            {"agentview": "observation.images.agentview", "side": "observation.images.side"},
            chunk_size=1,
            image_size=32,
            value_labels=True,
        )
    # a dataset that records no outcomes (no sidecar, no next.success): no labels
    with pytest.raises(VlaexpError, match=r"episodes \[0, 1, 2\] have no success flag"):
        value_datamodule(unflagged_dataset(tmp_path / "bare")).setup("fit")


def unflagged_dataset(root: Path) -> Path:
    """3 episodes x 4 frames as teleoperation data comes: no success flags anywhere."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.collect import dataset_features

    features = dataset_features(CAMERAS, 32, False)
    features = {k: v for k, v in features.items() if not k.startswith("next.")}
    ds = LeRobotDataset.create("test/bare", fps=20, features=features, root=root, use_videos=False)
    for _ in range(3):
        for _ in range(4):
            frame = {f"observation.images.{c}": np.zeros((32, 32, 3), np.uint8) for c in CAMERAS}
            frame["observation.state"] = np.zeros(8, np.float32)
            frame["action"] = np.zeros(7, np.float32)
            frame["task"] = TASKS[0]
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return root


def test_a_step_reading_value_function_trains_evaluates_and_reloads_through_the_stages(
    tiny_data: list[str], tmp_path: Path
) -> None:
    """policy.time_horizon (with time_dropout) through the stages: the DataModule's batches
    carry the step, the saved checkpoint keeps the time token, value_eval scores every test
    frame with it and without it, and writes the validation frames' predictions too."""
    import csv

    from vlaexp.config.compose import resolved_run_config
    from vlaexp.pipeline.context import RunContext
    from vlaexp.pipeline.registry import get_stage

    overrides = [
        *tiny_data,
        "policy=value_fn_tiny",
        "policy.time_horizon=220",
        "policy.time_dropout=0.5",
        "camera=both",
        "trainer=cpu",
        "trainer.max_steps=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
        f"paths.root_dir={tmp_path}",
    ]
    ctx = RunContext(cfg=resolved_run_config(overrides, tmp_path / "run"), run_dir=tmp_path / "run")
    get_stage("train")(ctx)
    trained = load_value_function(ctx.artifacts["value_fn"])
    assert trained.config.time_horizon == 220 and trained.time_embed is not None
    assert trained.config.time_dropout == 0.5 and trained.time_null is not None
    get_stage("value_eval")(ctx)
    result = json.loads((ctx.run_dir / "value_eval.json").read_text())
    assert np.isfinite(result["mae"]) and result["frames"] == 16
    rows = {}
    for split, name in (("test", "value_predictions.csv"), ("val", "value_predictions_val.csv")):
        with open(ctx.run_dir / name) as f:
            rows[split] = list(csv.DictReader(f))
    assert len(rows["test"]) == 16 and {int(r["episode_index"]) for r in rows["test"]} == set(
        result["episodes"]
    )
    # the validation episode's frames, apart from the test ones
    assert rows["val"] and not {r["episode_index"] for r in rows["val"]} & {
        r["episode_index"] for r in rows["test"]
    }
    # the metrics with the step unknown are computed from their own column
    mae = np.mean(
        [abs(float(r["value"]) - float(r["expected_value_no_step"])) for r in rows["test"]]
    )
    assert mae == pytest.approx(result["without_step"]["mae"], abs=1e-5)
    assert any(r["expected_value_no_step"] != r["expected_value"] for r in rows["test"])


def test_train_stage_fits_a_value_fn_value_eval_and_value_advantage(
    tiny_data: list[str], tmp_path: Path
) -> None:
    from vlaexp.config.compose import resolved_run_config
    from vlaexp.pipeline.context import RunContext
    from vlaexp.pipeline.registry import get_stage

    overrides = [
        *tiny_data,
        "policy=value_fn_tiny",
        "camera=both",
        "stages=[train,value_eval]",
        "trainer=cpu",
        "trainer.max_steps=3",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
        f"paths.root_dir={tmp_path}",
    ]
    cfg = resolved_run_config(overrides, tmp_path / "run")
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run")
    get_stage("train")(ctx)
    assert ctx.metrics["train/global_step"] == 3 and "policy" not in ctx.artifacts
    assert np.isfinite(ctx.metrics["value/train_loss"])
    trained = load_value_function(ctx.artifacts["value_fn"])
    assert trained.config.name == "value_fn_tiny" and trained.train_config_yaml
    get_stage("value_eval")(ctx)
    result = json.loads((ctx.run_dir / "value_eval.json").read_text())
    assert len(result["episodes"]) == 1 and result["frames"] == 16  # 6 episodes split 8:1:1
    for key in ("cross_entropy", "top1", "top5", "mae", "spearman_pooled"):
        assert np.isfinite(result[key]) and ctx.metrics[f"value_eval/{key}"] == result[key]
    assert 0 <= result["top1"] <= result["top5"] <= 1
    # the per-frame predictions the metrics come from: recomputing the MAE from them agrees
    import csv

    with open(ctx.run_dir / "value_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {r["episode_index"] for r in rows} == {str(result["episodes"][0])}
    assert "without_step" not in result and "expected_value_no_step" not in rows[0]
    assert sorted(int(r["frame_index"]) for r in rows) == list(range(16))
    mae = np.mean([abs(float(r["value"]) - float(r["expected_value"])) for r in rows])
    assert mae == pytest.approx(result["mae"], abs=1e-5)
    (plot,) = (ctx.run_dir / "value_plots").glob("episode_*.png")  # the one test episode
    from PIL import Image

    assert Image.open(plot).size == (800, 300)

    # advantages of every frame of every episode, in a derived LeRobotDataset
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    get_stage("value_advantage")(ctx)
    summary = json.loads((ctx.run_dir / "advantage.json").read_text())
    assert summary["episodes"] == 6 and summary["frames"] == 96 and summary["horizon"] == 50
    for fraction in summary["positive_fraction"].values():  # 2 tasks x 48 frames
        assert abs(fraction - 0.3) <= 1 / 48
    shares = summary["positive_by_outcome"]  # the tiny set's failures carry no fault frame
    assert 0.0 <= shares["successes"] <= 1.0 and shares["failures_after_fault"] is None
    tenths = summary["success_positive_by_tenth"]  # 16-frame successes reach every tenth
    assert len(tenths) == 10 and None not in tenths
    assert min(tenths) <= shares["successes"] <= max(tenths)
    assert summary["positive_by_action_noise"] == {}  # the tiny set's records do not say
    derived = LeRobotDataset("test/advantage", root=ctx.artifacts["advantage_dataset"])
    adv = derived.hf_dataset["advantage"]
    assert len(adv) == 96 and all(np.isfinite(float(a)) for a in adv)
    item = derived[20]
    task = item["task"]
    positive = bool(item["advantage_positive"])
    assert positive == (float(item["advantage"]) >= summary["thresholds"][task])

    # the run's summary takes value_eval's metrics as they come (a per-kind dict, a nan
    # AUROC): a GPU run's report stage once crashed on them after every value file was written
    get_stage("report")(ctx)
    report = json.loads((ctx.run_dir / "summary.json").read_text())["metrics"]
    assert report["value_eval/mae"] == result["mae"]
    assert not any(isinstance(v, dict) for v in report.values())
    assert "| value_eval/mae |" in (ctx.run_dir / "summary.md").read_text()

    # an advantage-conditioned Pi0.5 trains on that dataset from the entry point's stages
    pi05 = resolved_run_config(
        [
            *[o for o in overrides if not o.startswith(("policy=", "data.root="))],
            f"data.root={ctx.artifacts['advantage_dataset']}",
            "policy=pi05_tiny",
            "policy.image_size=32",
            "policy.chunk_size=4",
            "policy.n_action_steps=2",
            "policy.advantage.enabled=true",
            "trainer.max_steps=2",
        ],
        tmp_path / "pi05",
    )
    pi05_ctx = RunContext(cfg=pi05, run_dir=tmp_path / "pi05")
    get_stage("train")(pi05_ctx)
    assert pi05_ctx.metrics["train/global_step"] == 2 and np.isfinite(
        pi05_ctx.metrics["train/loss"]
    )
