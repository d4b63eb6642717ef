"""Pi0 / Pi0.5 policies: learning, the LeRobot contract, training controls, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vlaexp.config.compose import compose_config
from vlaexp.errors import VlaexpError
from vlaexp.policies.factory import load_pretrained, make_policy
from vlaexp.policies.pi0.policy import Pi0Policy
from vlaexp.training.trainer import build_trainer

STATS = {
    "observation.state": {
        "mean": np.zeros(8),
        "std": np.ones(8),
        "q01": -2 * np.ones(8),
        "q99": 2 * np.ones(8),
    },
    "action": {
        "mean": np.zeros(7),
        "std": np.ones(7),
        "q01": -2 * np.ones(7),
        "q99": 2 * np.ones(7),
    },
}
TASK = "pick up the red cube to the left of the plate and place it on the plate"


def tiny(name: str, *overrides: str) -> Pi0Policy:
    cfg = compose_config([f"policy={name}", *overrides])
    return make_policy(OmegaConf.to_container(cfg.policy, resolve=True), dataset_stats=STATS)


def make_batch(b: int = 4, chunk: int = 10, size: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, chunk)
    return {
        "observation.images.agentview": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
        "observation.images.wrist": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
        "observation.state": torch.randn(b, 8, generator=g),
        "action": torch.sin(t[None, :, None] * 3 + torch.randn(b, 1, 7, generator=g)),
        "action_is_pad": torch.zeros(b, chunk, dtype=torch.bool),
        "task": [TASK] * b,
    }


def fixed_loss(policy: Pi0Policy, batch: dict, draws: int = 4) -> float:
    """The flow-matching loss at fixed noise and times (the training loss draws both)."""
    g = torch.Generator().manual_seed(123)
    b, chunk = batch["action"].shape[:2]
    dim = policy.config.max_action_dim
    images, masks, tokens, token_mask, state = policy._inputs(batch)
    actions = torch.nn.functional.pad(
        policy.normalizer.normalize("action", batch["action"]), (0, dim - 7)
    )
    with torch.no_grad():
        losses = [
            policy.model(
                images,
                masks,
                tokens,
                token_mask,
                state,
                actions,
                torch.randn(b, chunk, dim, generator=g),
                torch.rand(b, generator=g),
            )[..., :7].mean()
            for _ in range(draws)
        ]
    return float(torch.stack(losses).mean())


# Pi0's run (~80 s on 2 cores) is in the slow tier (make test-full): the fast tier keeps
# Pi0.5's, which trains the same flow head and joint model plus adaRMS and the state prompt.
@pytest.mark.parametrize("name", [pytest.param("pi0_tiny", marks=pytest.mark.slow), "pi05_tiny"])
def test_tiny_policy_overfits_one_batch(name: str) -> None:
    torch.manual_seed(0)
    steps = 500
    policy = tiny(
        name,
        "policy.optimizer.lr=1e-3",
        "policy.scheduler.warmup_steps=20",
        f"policy.scheduler.decay_steps={steps}",
    )
    batch = make_batch()
    opt = policy.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    before = fixed_loss(policy, batch)
    for _ in range(steps):
        loss, _ = policy(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    after = fixed_loss(policy, batch)
    assert before / after >= 10, (before, after)
    policy.eval()
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (4, 10, 7) and torch.isfinite(chunk).all()
    # the sampled chunks are the memorized ones, in raw action units
    assert (chunk - batch["action"]).abs().mean() < 0.25 * batch["action"].abs().mean()


def test_select_action_predicts_a_chunk_every_n_action_steps(monkeypatch) -> None:
    policy = tiny("pi0_tiny", "policy.n_action_steps=3").eval()
    calls = []
    predict = policy.predict_action_chunk
    monkeypatch.setattr(policy, "predict_action_chunk", lambda b: calls.append(1) or predict(b))
    batch = make_batch(b=2)
    actions = [policy.select_action(batch) for _ in range(7)]
    assert len(calls) == 3 and all(a.shape == (2, 7) for a in actions)
    policy.reset()
    policy.select_action(batch)
    assert len(calls) == 4  # reset drops the queued actions


def test_a_masked_camera_has_no_influence() -> None:
    torch.manual_seed(0)
    policy = tiny("pi05_tiny").eval()
    batch = make_batch(b=2)
    images, _, tokens, token_mask, state = policy._inputs(batch)
    masks = [torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)]
    noise = torch.randn(2, 10, 8)
    other = [images[0], torch.rand_like(images[1])]
    a = policy.model.sample_actions(images, masks, tokens, token_mask, state, noise)
    b = policy.model.sample_actions(other, masks, tokens, token_mask, state, noise)
    torch.testing.assert_close(a, b)
    # a camera missing from the batch is such a masked camera
    del batch["observation.images.wrist"]
    got = policy.predict_action_chunk(batch, noise=noise)
    want = policy.normalizer.unnormalize("action", a[..., :7])
    torch.testing.assert_close(got, want)


def _trainable(policy: Pi0Policy, prefix: str) -> bool:
    return any(p.requires_grad for n, p in policy.model.named_parameters() if n.startswith(prefix))


def test_training_controls() -> None:
    bf16 = tiny("pi0_tiny", "policy.dtype=bfloat16")
    m = bf16.model
    assert m.vlm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert m.vision_tower.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    for norm_param in (
        m.vlm.layers[0].input_layernorm.weight,
        m.expert.norm.weight,
        m.vision_tower.vision_model.embeddings.patch_embedding.weight,
    ):
        assert norm_param.dtype == torch.float32
    loss, _ = bf16(make_batch(b=2))
    assert torch.isfinite(loss)

    frozen = tiny("pi0_tiny", "policy.freeze_vision_encoder=true")
    assert not _trainable(frozen, "vision_tower") and _trainable(frozen, "vlm.")
    expert_only = tiny("pi0_tiny", "policy.train_expert_only=true")
    assert not any(
        _trainable(expert_only, p) for p in ("vision_tower", "projector", "embed_tokens", "vlm.")
    )
    assert _trainable(expert_only, "expert.") and _trainable(expert_only, "action_in_proj")

    lora = tiny("pi0_tiny", "policy.lora.enabled=true", "policy.lora.rank=4")
    trainable = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert trainable and all(
        "lora_" in n or n.startswith(("action_", "state_proj")) for n in trainable
    )
    assert any("expert.layers.0.self_attn.q_proj.lora_A" in n for n in trainable)
    loss, _ = lora(make_batch(b=2))
    loss.backward()
    lora_b = lora.model.expert.layers[0].mlp.up_proj.lora_B["default"].weight
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0


def test_token_embedding_init_std_is_configurable_and_pretrained_weights_replace_it(
    tmp_path: Path,
) -> None:
    torch_init = tiny("pi05_tiny", "policy.embedding_init_std=null").model.embed_tokens.weight
    gemma_init = tiny("pi05_tiny").model.embed_tokens.weight  # the from-scratch Pi0.5s' 0.02
    assert abs(torch_init.std().item() - 1.0) < 0.05  # torch's N(0, 1)
    assert abs(gemma_init.std().item() - 0.02) < 0.002
    assert abs(tiny("pi0_tiny").model.embed_tokens.weight.std().item() - 1.0) < 0.05
    policy = tiny("pi05_tiny")
    policy.save_pretrained(tmp_path / "pm")
    reloaded = load_pretrained(tmp_path / "pm")
    assert torch.equal(reloaded.model.embed_tokens.weight, policy.model.embed_tokens.weight)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for ckpt in ("false", "true"):
        torch.manual_seed(0)
        policy = tiny("pi05_tiny", f"policy.gradient_checkpointing={ckpt}")
        torch.manual_seed(1)
        loss, _ = policy(make_batch(b=2))
        loss.backward()
        grads.append(policy.model.expert.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_unused_last_layer_weights_are_frozen() -> None:
    """The prefix's output after the last VLM layer is never used: its weights get no
    gradient, so they are frozen (and DDP sees no unused parameters)."""
    policy = tiny("pi0_tiny")
    loss, _ = policy(make_batch(b=2))
    loss.backward()
    no_grad = [n for n, p in policy.model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert not policy.model.vlm.layers[-1].mlp.up_proj.weight.requires_grad
    assert policy.model.vlm.layers[-1].self_attn.k_proj.weight.requires_grad


def test_trains_through_the_shared_trainer_and_reloads_offline(
    tiny_data: list[str], tmp_path: Path
) -> None:
    from tests.test_training import _setup

    run = tmp_path / "run"
    cfg, dm, policy = _setup(
        [
            *tiny_data,
            "policy=pi05_tiny",
            "policy.image_size=32",
            "policy.chunk_size=4",
            "policy.n_action_steps=2",
            "stages=[train]",
            "trainer=cpu",
            "trainer.max_steps=3",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "logger=csv",
            "print_config=false",
            f"paths.root_dir={tmp_path}",
        ],
        run,
    )
    trainer = build_trainer(cfg)
    trainer.fit(policy, datamodule=dm)
    pretrained = run / "checkpoints" / "last" / "pretrained_model"
    assert (pretrained / "tokenizer" / "tokenizer.json").is_file()
    loaded = load_pretrained(run)
    assert loaded.config.type == "pi05" and isinstance(loaded, Pi0Policy)
    batch = next(iter(dm.val_dataloader()))
    policy.eval()
    noise = torch.randn(len(batch["action"]), 4, 8)
    torch.testing.assert_close(
        policy.predict_action_chunk(batch, noise=noise),
        loaded.predict_action_chunk(batch, noise=noise),
    )


def test_image_augmentation_is_per_image_training_only_and_spares_wrist_geometry() -> None:
    from vlaexp.data.transforms import augment_images

    g = torch.Generator().manual_seed(0)
    img = torch.full((1, 3, 32, 32), -1.0)
    img[..., 16, 16] = 1.0  # one white pixel on black
    same = augment_images(img, 1.0, 0.0, 0.0, 0.0, 0.0, generator=g)
    torch.testing.assert_close(same, img)  # no crop, rotation or jitter: the identity
    batch = img.repeat(8, 1, 1, 1)
    out = augment_images(batch, geometric=True, generator=g)
    assert out.shape == batch.shape and out.min() >= -1 and out.max() <= 1
    # each image gets its own crop and rotation: the bright spot lands in different places
    spots = {int(o[0].flatten().argmax()) for o in out}
    assert len(spots) > 1
    # colour only: the spot stays where it was in every image, its brightness varies
    colour = augment_images(batch, geometric=False, generator=g)
    assert all(int(o[0].flatten().argmax()) == 16 * 32 + 16 for o in colour)
    assert colour[:, :, 16, 16].std() > 0 or colour.std(dim=0).max() > 0

    policy = tiny("pi05_tiny", "policy.augment.enabled=true")
    batch = make_batch(b=2)
    policy.train()
    images, _ = policy._images(batch)
    assert not torch.equal(images[0], batch["observation.images.agentview"])
    policy.eval()  # evaluation and sampling see the images unchanged
    images, _ = policy._images(batch)
    assert torch.equal(images[0], batch["observation.images.agentview"])
    assert torch.equal(images[1], batch["observation.images.wrist"])


def test_padded_vision_mlp_is_the_same_function_trains_the_same_and_saves_published_shapes(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    plain = tiny("pi0_tiny")
    padded = tiny("pi0_tiny", "policy.vision.mlp_pad_multiple=128")
    fc1 = padded.model.vision_tower.vision_model.encoder.layers[0].mlp.fc1
    assert fc1.weight.shape == (256, 96)  # 192 -> 256
    padded.load_state_dict(plain.state_dict())  # published shapes in, padded with zeros
    assert {k: v.shape for k, v in padded.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    batch = make_batch(b=2)
    torch.testing.assert_close(fixed_loss(padded, batch), fixed_loss(plain, batch))
    # one step on each (SGD: Adam would blow the ~1e-9 noise of the key bias's zero gradient
    # up to a full step): the padding gets zero gradients and the two stay the same function
    for policy in (plain, padded):
        opt = torch.optim.SGD(policy.parameters(), lr=0.1, weight_decay=0.1)
        torch.manual_seed(1)
        loss, _ = policy(batch)
        loss.backward()
        opt.step()
    assert fc1.weight.grad[192:].abs().max() == 0
    for (name, a), b in zip(plain.state_dict().items(), padded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    torch.optim.AdamW(padded.parameters(), lr=1e-2, weight_decay=0.1).step()  # AdamW too
    fc2 = padded.model.vision_tower.vision_model.encoder.layers[0].mlp.fc2
    assert fc1.weight[192:].abs().max() == 0 and fc1.bias[192:].abs().max() == 0
    assert fc2.weight[:, 192:].abs().max() == 0
    # saved weights load into a policy without padding
    padded.save_pretrained(tmp_path / "pretrained_model")
    reloaded = load_pretrained(tmp_path / "pretrained_model")
    assert reloaded.config.vision.mlp_pad_multiple == 128
    torch.testing.assert_close(fixed_loss(reloaded, batch), fixed_loss(padded, batch))


def test_pi05_without_discrete_state_input_has_pi0s_prompt_and_ignores_the_state() -> None:
    """openpi's ``discrete_state_input=False`` (its pi05_libero recipe): no state anywhere."""
    policy = tiny("pi05_tiny", "policy.discrete_state_input=false")
    a, b = torch.zeros(2, 32), torch.full((2, 32), 0.7)
    assert policy.prompts([TASK] * 2, a) == policy.prompts([TASK] * 2, b) == [f"{TASK}\n"] * 2
    batch = make_batch(b=2)
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    moved = dict(batch, **{"observation.state": batch["observation.state"] + 3.0})
    policy.eval()
    torch.testing.assert_close(
        policy.predict_action_chunk(batch, noise=noise),
        policy.predict_action_chunk(moved, noise=noise),
    )
    with_state = tiny("pi05_tiny")  # the default writes it: the same move changes the prompt
    assert with_state.prompts([TASK], a[:1]) != with_state.prompts([TASK], b[:1])
    # advantage conditioning without state: the indicator line follows the task's line
    adv = tiny("pi05_tiny", "policy.discrete_state_input=false", "policy.advantage.enabled=true")
    assert adv.prompts([TASK] * 2, a, ["negative", None]) == [
        f"{TASK}\nAdvantage: negative;\n",
        f"{TASK}\n",
    ]
    adv.eval()  # acting asks for "positive", which changes the actions
    torch.testing.assert_close(
        adv.predict_action_chunk(batch, noise=noise), adv.predict_action_chunk(moved, noise=noise)
    )
    plain = adv.predict_action_chunk(batch, noise=noise)
    adv.config.advantage.enabled = False
    assert (adv.predict_action_chunk(batch, noise=noise) - plain).abs().max() > 1e-4


def test_advantage_conditioning_prompts_dropout_and_guidance() -> None:
    """Training prompts carry the batch's advantage label except for a dropout share; acting
    asks for "positive"; guidance beta mixes the two velocities linearly."""
    policy = tiny("pi05_tiny", "policy.advantage.enabled=true", "policy.advantage.dropout=0.3")
    batch = make_batch(b=200)
    batch["advantage_positive"] = torch.arange(200) % 2 == 0
    torch.manual_seed(0)
    policy.train()
    indicators = policy._advantage_indicators(batch, 200)
    kept = [(i, a) for i, a in enumerate(indicators) if a is not None]
    assert abs(1 - len(kept) / 200 - 0.3) < 0.08  # about 30% dropped
    assert all(a == ("positive" if i % 2 == 0 else "negative") for i, a in kept)
    prompts = policy.prompts([TASK] * 2, torch.zeros(2, 32), ["positive", None])
    assert prompts[0].endswith(";\nAdvantage: positive;\nAction: ")
    assert "Advantage" not in prompts[1] and prompts[1].endswith(";\nAction: ")
    del batch["advantage_positive"]
    with pytest.raises(VlaexpError, match="value_advantage"):
        policy._advantage_indicators(batch, 200)

    batch["advantage_positive"] = torch.arange(200) % 2 == 0
    policy.eval()  # validation loss: every label, none dropped; acting: "positive"
    assert policy._advantage_indicators(batch, 200) == [
        "positive" if i % 2 == 0 else "negative" for i in range(200)
    ]
    assert policy._advantage_indicators(batch, 3, labels=False) == ["positive"] * 3
    small = make_batch(b=2)
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    policy.config.num_inference_steps = 1  # one Euler step: actions are linear in beta

    def act(beta: float) -> torch.Tensor:
        policy.config.advantage.guidance = beta
        return policy.predict_action_chunk(small, noise=noise)

    a0, a1, a2 = act(0.0), act(1.0), act(2.0)
    torch.testing.assert_close(a2 - a1, a1 - a0, atol=1e-4, rtol=1e-4)
    assert (a1 - a0).abs().max() > 1e-4  # the indicator changes the actions
    # beta 0 is the policy without the indicator: same as feeding the unconditioned prompt
    policy.config.advantage.enabled = False
    torch.testing.assert_close(policy.predict_action_chunk(small, noise=noise), a0)


def test_policy_knows_on_the_host_whether_a_batch_is_padded(monkeypatch) -> None:
    """The policy tells the model whether the prefix has padding from the tokenizer's mask
    and the batch's cameras (no device sync); only an unpadded batch skips the mask."""
    from vlaexp.policies.pi0 import joint

    policy = tiny("pi05_tiny", "policy.tokenizer_max_length=4")  # the prompt fills 4 tokens
    batch = make_batch(b=2)
    policy._inputs(batch)
    assert policy._unpadded
    del batch["observation.images.wrist"]
    policy._inputs(batch)
    assert not policy._unpadded
    padded = tiny("pi05_tiny")
    padded._inputs(make_batch(b=2))
    assert not padded._unpadded
    seen = []
    real = joint.joint_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("block_ends"))
        return real(*args, **kwargs)

    monkeypatch.setattr("vlaexp.policies.pi0.model.joint_forward", spy)
    policy(make_batch(b=2))
    padded(make_batch(b=2))
    assert seen[0] is not None and seen[1] is None
