"""Pi0 / Pi0.5 network: published key layouts, the reference's math, masks, adaRMS, prompts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference.lerobot_pi0 import Small, build_reference, openpi_math, our_config
from vlaexp.config.policy import Pi0Config, Pi05Config
from vlaexp.policies.pi0.flow import attention_mask_2d, euler_times, positions_from_pad
from vlaexp.policies.pi0.gemma import (
    AdaptiveRMSNorm,
    expand_heads,
    fused_weights,
    gated_residual,
    rotary_tables,
    rotary_tables_inline,
)
from vlaexp.policies.pi0.model import Pi0Model
from vlaexp.policies.pi0.prompt import discretize_state, pi0_prompt, pi05_prompt
from vlaexp.policies.pi0.weights import map_state_dict

# The published checkpoints' parameter names and shapes (LeRobot 0.4.4's PI0Policy /
# PI05Policy state dicts; copied from the project's shared/reference, see its README).
REFERENCE = Path(__file__).resolve().parent / "data" / "reference"


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_full_size_model_has_the_published_names_and_shapes(variant: str) -> None:
    path = REFERENCE / f"{variant}_state_dict_shapes.json"
    cfg = Pi05Config() if variant == "pi05" else Pi0Config()
    with torch.device("meta"):
        model = Pi0Model(cfg)
    published = {k: torch.empty(v, device="meta") for k, v in json.loads(path.read_text()).items()}
    mapped = map_state_dict(published, pi05=variant == "pi05")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(mapped)) == []
    assert sorted(set(mapped) - set(ours)) == []
    assert {k: tuple(v.shape) for k, v in mapped.items()} == ours
    # only the two unused lm_heads are left out of the mapping
    assert len(published) - len(mapped) == 2


def _inputs(small: Small, b: int = 3):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(b, 3, small.image, small.image, generator=g) * 2 - 1 for _ in range(2)]
    image_masks = [torch.ones(b, dtype=torch.bool), torch.tensor([True, False, True])]
    tokens = torch.randint(0, small.vocab, (b, small.text), generator=g)
    token_mask = torch.ones(b, small.text, dtype=torch.bool)
    token_mask[0, 5:] = False
    token_mask[2, 3:] = False
    state = torch.randn(b, 32, generator=g)
    actions = torch.randn(b, small.chunk, 32, generator=g)
    noise = torch.randn(b, small.chunk, 32, generator=g)
    time = torch.rand(b, generator=g)
    return images, image_masks, tokens, token_mask, state, actions, noise, time


@pytest.fixture(scope="module")
def reference_pair():
    """LeRobot's PI0Pytorch and ours with the same weights; run the reference inside
    ``openpi_math`` (the patches act when its methods run)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip(
            f"LeRobot 0.4.4's Pi0 runs on transformers 4.57, this is {transformers.__version__}"
        )
    small = Small()
    torch.manual_seed(0)
    with openpi_math(small) as modeling_pi0:
        ref = build_reference(modeling_pi0, small)
    with torch.no_grad():  # move every weight off its init (norms start at 0)
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = Pi0Model(our_config(small)).eval()
    ours.load_state_dict(map_state_dict(ref.state_dict(), pi05=False), strict=True)
    return small, ref, ours


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_loss_matches_the_reference(reference_pair, impl: str) -> None:
    small, ref, ours = reference_pair
    images, masks, tokens, token_mask, state, actions, noise, time = _inputs(small)
    ours.cfg.attention = impl
    with torch.no_grad(), openpi_math(small):
        expected = ref.forward(images, masks, tokens, token_mask, state, actions, noise, time)
    with torch.no_grad():
        got = ours(images, masks, tokens, token_mask, state, actions, noise, time)
    assert got.shape == expected.shape == (3, small.chunk, 32)
    assert abs(got.mean() - expected.mean()) <= 1e-4 * expected.mean()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_unpadded_batch_attends_block_by_block_without_a_mask(
    reference_pair, monkeypatch, variant: str
) -> None:
    """A batch without padding (both cameras, full prompts) runs each causal block's
    queries against the keys before the block's end with no mask (cuDNN's fast kernel on a
    GPU): the loss and gradients of the dense mask, the reference's loss (Pi0); a padded
    batch keeps the dense mask."""
    from vlaexp.policies.pi0 import joint

    small, ref, pi0 = reference_pair
    if variant == "pi0":
        ours = pi0
    else:
        cfg = our_config(small)
        kept = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}
        torch.manual_seed(0)
        ours = Pi0Model(Pi05Config(**{**kept, "type": "pi05"}))
    images, _, tokens, _, state, actions, noise, time = _inputs(small)
    masks = [torch.ones(3, dtype=torch.bool)] * 2
    token_mask = torch.ones_like(tokens, dtype=torch.bool)
    ours.cfg.attention = "sdpa"
    masked_calls = []
    real = joint.attention

    def spy(q, k, v, mask, impl):
        masked_calls.append(mask is not None)
        return real(q, k, v, mask, impl)

    monkeypatch.setattr(joint, "attention", spy)
    grads, losses = [], []
    for unmasked in (True, False):
        monkeypatch.setattr(joint, "UNMASKED_BLOCKS", unmasked)
        masked_calls.clear()
        ours.zero_grad()
        loss = ours(images, masks, tokens, token_mask, state, actions, noise, time)
        loss[..., :7].mean().backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in ours.parameters() if p.grad is not None])
        blocks = 2 if variant == "pi05" else 3  # prefix | (state |) actions
        if unmasked:  # per layer one call per queried block; the last layer skips the prefix
            assert masked_calls == [False] * (blocks * small.depth - 1)
        else:
            assert masked_calls == [True] * small.depth
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-7)
    assert len(grads[0]) == len(grads[1]) > 10
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    if variant == "pi0":
        with torch.no_grad(), openpi_math(small):
            expected = ref.forward(images, masks, tokens, token_mask, state, actions, noise, time)
        torch.testing.assert_close(losses[0], expected, rtol=1e-4, atol=1e-6)
    # padding (a missing camera) keeps the dense mask even with UNMASKED_BLOCKS
    monkeypatch.setattr(joint, "UNMASKED_BLOCKS", True)
    masked_calls.clear()
    with torch.no_grad():
        ours(
            images,
            [masks[0], torch.tensor([True, False, True])],
            tokens,
            token_mask,
            state,
            actions,
            noise,
            time,
        )
    assert masked_calls == [True] * small.depth
    ours.zero_grad()


def _sample(small, ref, openpi_fixes=True):
    images, masks, tokens, token_mask, state, _, noise, _ = _inputs(small)
    with torch.no_grad(), openpi_math(small, openpi_fixes):
        return ref.sample_actions(images, masks, tokens, token_mask, state, noise=noise)


def test_sampled_chunk_matches_the_reference(reference_pair) -> None:
    small, ref, ours = reference_pair
    images, masks, tokens, token_mask, state, _, noise, _ = _inputs(small)
    ours.cfg.attention = "sdpa"
    expected = _sample(small, ref)
    with torch.no_grad():
        got = ours.sample_actions(images, masks, tokens, token_mask, state, noise=noise)
    assert expected.abs().max() > 0.1  # a real chunk, not zeros
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


def test_stock_transformers_math_is_not_openpis(reference_pair) -> None:
    """Why the harness patches image scaling and the Gemma input normalizer: without them
    LeRobot's Pi0 on stock transformers samples other actions from the same weights."""
    small, ref, _ = reference_pair
    assert (_sample(small, ref, openpi_fixes=False) - _sample(small, ref)).abs().max() > 1e-2


def test_masks_follow_the_block_scheme() -> None:
    # prefix of 3 (last is padding), Pi0 suffix: state then 2 actions
    pad = torch.tensor([[True, True, False, True, True, True]])
    blocks = torch.tensor([[0, 0, 0, 1, 1, 0]])
    m = attention_mask_2d(pad, blocks)[0]
    prefix, state, actions = [0, 1], 3, [4, 5]
    assert m[0, 1] and m[1, 0]  # prefix is bidirectional
    assert not m[:, 2].any() and not m[2].any()  # padding neither attends nor is attended
    assert not m[0, state] and not m[1, 4]  # prefix never sees the suffix
    assert m[state, 0] and not m[state, 4]  # state sees the prefix, not the actions
    assert all(m[a, p] for a in actions for p in [*prefix, state])  # actions see all before
    assert m[4, 5] and m[5, 4]  # actions attend to each other
    assert positions_from_pad(pad).tolist() == [[0, 1, 1, 2, 3, 4]]
    assert positions_from_pad(pad[:, 3:], offset=torch.tensor([2])).tolist() == [[2, 3, 4]]


def test_euler_times_go_from_noise_to_data() -> None:
    times, dt = euler_times(10)
    assert times[0] == 1.0 and dt == -0.1 and len(times) == 10
    assert abs(times[-1] + dt) < 1e-12
    with pytest.raises(ValueError, match="num_inference_steps"):
        euler_times(0)


def test_adaptive_rmsnorm_scales_shifts_and_gates() -> None:
    torch.manual_seed(0)
    norm = AdaptiveRMSNorm(8, cond_dim=4)
    with torch.no_grad():
        norm.dense.weight.normal_()
        norm.dense.bias.normal_()
    x, cond = torch.randn(2, 5, 8), torch.randn(2, 4)
    y, gate = norm(x, cond)
    scale, shift, g = (norm.dense(cond)[:, None, :]).chunk(3, dim=-1)
    unit = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(y, unit * (1 + scale) + shift)
    torch.testing.assert_close(gate, g)
    residual = torch.randn(2, 5, 8)
    torch.testing.assert_close(gated_residual(residual, y, gate), residual + y * g)
    # the plain form is Gemma's RMSNorm, no gate
    plain = AdaptiveRMSNorm(8)
    with torch.no_grad():
        plain.weight.fill_(0.5)
    y2, none = plain(x)
    assert none is None
    torch.testing.assert_close(y2, unit * 1.5)
    with pytest.raises(ValueError, match="condition"):
        norm(x)


def test_pi05_expert_norms_are_adaptive_and_time_conditions_them() -> None:
    small = Small()
    cfg = our_config(small)
    cfg.type = "pi05"
    model = Pi0Model(cfg).eval()
    assert model.expert.layers[0].input_layernorm.dense is not None
    assert model.vlm.layers[0].input_layernorm.dense is None  # the VLM is plain Gemma
    assert not hasattr(model, "state_proj")  # the state is in the prompt
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images, masks, tokens, token_mask, _, actions, noise, _ = _inputs(small)
    t1, t2 = torch.full((3,), 0.2), torch.full((3,), 0.9)
    with torch.no_grad():
        l1 = model(images, masks, tokens, token_mask, None, actions, noise, t1)
        l2 = model(images, masks, tokens, token_mask, None, actions, noise, t2)
    assert not torch.allclose(l1, l2)


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_fused_expert_projections_give_the_same_denoising_step(variant: str) -> None:
    """Sampling stacks the expert's q/k/v and gate/up weights (two GEMMs instead of five);
    the velocity must not change, and LoRA-wrapped projections must not be fused."""
    small = Small()
    cfg = our_config(small)
    cfg.type = variant
    torch.manual_seed(0)
    model = Pi0Model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images, masks, tokens, token_mask, state, _, noise, _ = _inputs(small)
    state = state if variant == "pi0" else None
    t = torch.full((3,), 0.7)
    with torch.no_grad():
        pad, cache = model.encode_prefix(images, masks, tokens, token_mask)
        plain = model.denoise_step(state, pad, cache, noise, t)
        fused = fused_weights(model.expert)
        assert fused is not None and len(fused) == cfg.expert.depth
        v = model.denoise_step(state, pad, cache, noise, t, fused)
    torch.testing.assert_close(v, plain, atol=1e-5, rtol=1e-5)
    # the stacked weights follow an in-place update of the originals
    with torch.no_grad():
        model.expert.layers[0].mlp.up_proj.weight.mul_(2.0)
        assert torch.equal(
            fused_weights(model.expert)[0][1][-1], model.expert.layers[0].mlp.up_proj.weight[-1]
        )
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), model.expert)
    assert fused_weights(model.expert) is None


def test_one_key_head_is_shared_as_a_view() -> None:
    k = torch.randn(2, 1, 5, 4)
    wide = expand_heads(k, 8)
    assert wide.shape == (2, 8, 5, 4) and wide.data_ptr() == k.data_ptr()  # no copy
    torch.testing.assert_close(wide, k.repeat_interleave(8, dim=1))
    k2 = torch.randn(2, 2, 5, 4)  # grouped: key head i serves query heads 4i..4i+3
    torch.testing.assert_close(expand_heads(k2, 8)[:, 4:], k2[:, 1:2].expand(2, 4, 5, 4))


def test_rope_tables_are_one_op_in_the_compiled_graph() -> None:
    """torch.compile sees the RoPE tables as one opaque op, computed once per forward (traced
    through, inductor recomputed sin/cos inside every layer's RoPE kernel); same values."""
    small = Small()
    model = Pi0Model(our_config(small)).train()
    images, masks, tokens, token_mask, state, actions, noise, t = _inputs(small)
    graphs = []

    def backend(gm, example_inputs):  # keeps the traced graph, runs it as traced
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        loss = torch.compile(model, backend=backend)(
            images, masks, tokens, token_mask, state, actions, noise, t
        )
    finally:
        torch._dynamo.reset()
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert sum("vlaexp.rotary_tables" in x for x in targets) == 1
    assert not any(x.endswith(("cos", "sin")) for x in targets)
    with torch.no_grad():
        eager = model(images, masks, tokens, token_mask, state, actions, noise, t)
    torch.testing.assert_close(loss, eager)
    positions = torch.randint(0, 900, (3, 17))
    for dtype in (torch.float32, torch.bfloat16):
        ours, inline = (
            rotary_tables(positions, 64, dtype),
            rotary_tables_inline(positions, 64, dtype),
        )
        for a, b in zip(ours, inline, strict=True):
            assert a.dtype == dtype and a.shape == (3, 1, 17, 64) and torch.equal(a, b)


def test_state_discretization_is_openpis_rule() -> None:
    state = np.array([[-1.5, -1.0, -0.999, 0.0, 0.5, 0.99, 1.0, 1.5]])
    assert discretize_state(state).tolist() == [[-1, 0, 0, 128, 192, 254, 255, 255]]


def test_prompts() -> None:
    assert pi0_prompt("open the drawer") == "open the drawer\n"
    assert pi0_prompt("open the drawer\n") == "open the drawer\n"
    assert (
        pi05_prompt(" open_the drawer\n", np.array([0, 128, 255]))
        == "Task: open the drawer, State: 0 128 255;\nAction: "
    )


def test_bundled_tokenizer_is_rebuilt_identically_by_its_script() -> None:
    from vlaexp.policies.pi0.build_tokenizer import build
    from vlaexp.policies.pi0.prompt import load_tokenizer

    bundled = load_tokenizer("tabletop")
    assert build(1024).get_vocab() == bundled.get_vocab()
    ids = bundled(pi05_prompt("put the red cube in the bowl", np.arange(8)))["input_ids"]
    assert ids[0] == bundled.bos_token_id and bundled.unk_token_id not in ids


def test_every_state_bin_is_one_token_wherever_it_stands_and_prompts_fit() -> None:
    """The bundled tokenizer spells bin b as the same single token in each of the state's
    positions (it once merged the last number with the ";" after it), and the longest tabletop
    prompt with state and advantage indicator fits the Pi0.5 configs' tokenizer_max_length."""
    from vlaexp.config.compose import compose_config
    from vlaexp.policies.pi0.prompt import load_tokenizer
    from vlaexp.sim.tabletop.tasks import SUITES

    tok = load_tokenizer("tabletop")
    task = "put the red cube in the bowl"
    prefix = len(tok(f"Task: {task}, State:")["input_ids"])
    for b in range(256):
        ids = tok(pi05_prompt(task, np.full(8, b)))["input_ids"]
        assert ids[prefix : prefix + 8] == tok.convert_tokens_to_ids([f"\u2581{b}"] * 8), b
    instructions = {t.instruction for tasks in SUITES.values() for t in tasks}
    longest = max(
        len(tok(pi05_prompt(i, np.full(8, 255), "negative"))["input_ids"]) for i in instructions
    )
    for name in ("pi05_tiny", "pi05_small", "rvq_policy_tiny", "rvq_policy_small"):
        assert longest <= compose_config([f"policy={name}"]).policy.tokenizer_max_length, name


def test_unknown_tokenizer_names_the_setting_and_the_bundled_ones() -> None:
    from vlaexp.errors import VlaexpError
    from vlaexp.policies.pi0.prompt import load_tokenizer

    with pytest.raises(VlaexpError, match=r"policy\.tokenizer.*bundled one: tabletop"):
        load_tokenizer("no-such-org/no-such-tokenizer")  # HF_HUB_OFFLINE=1 in the tests


def test_tokenizer_saved_by_transformers_5_loads_under_4(tmp_path) -> None:
    """A checkpoint trained on the GPU machine (transformers 5) names its tokenizer class
    ``TokenizersBackend``; loaded on a CPU with transformers 4 it tokenizes as saved."""
    import json

    from vlaexp.policies.pi0.prompt import load_tokenizer

    bundled = load_tokenizer("tabletop")
    bundled.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "TokenizersBackend"  # what transformers 5 writes
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_tokenizer("unused", local_dir=tmp_path)
    prompt = pi05_prompt("put the red cube in the bowl", np.arange(8))
    assert loaded(prompt)["input_ids"] == bundled(prompt)["input_ids"]
    assert (loaded.bos_token_id, loaded.pad_token_id) == (
        bundled.bos_token_id,
        bundled.pad_token_id,
    )
    (tmp_path / "tokenizer.json").unlink()  # nothing to read it from: the error stays
    with pytest.raises(ValueError, match="TokenizersBackend"):
        load_tokenizer("unused", local_dir=tmp_path)
