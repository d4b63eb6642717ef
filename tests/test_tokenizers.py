"""Action tokenizers: RVQ round trip and layer-truncated decoding, quantizer dropout, the DCT
baseline with its decode-failure report, clear errors for bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.helpers import run_vlaexp
from vlaexp.errors import ConfigError
from vlaexp.tokenizers.analysis import code_usage, depth_errors
from vlaexp.tokenizers.dct import DCTSettings, DCTTokenizer, DecodeError, dct_curve
from vlaexp.tokenizers.rvq import RVQSettings, RVQTokenizer

SMALL = dict(chunk_size=8, action_dim=3, latent_dim=16, hidden_dim=64, layers=4, codebook_size=16)


def smooth_chunks(n: int, t: int = 8, a: int = 3, seed: int = 0) -> torch.Tensor:
    """Chunks of smooth motion in [-1, 1]: a random line plus a slow wave per dimension."""
    g = torch.Generator().manual_seed(seed)
    time = torch.linspace(0, 1, t)[None, :, None]
    start = torch.rand(n, 1, a, generator=g) * 1.2 - 0.6
    slope = torch.rand(n, 1, a, generator=g) * 0.6 - 0.3
    wave = 0.2 * torch.sin(6.28 * time + torch.rand(n, 1, a, generator=g) * 6.28)
    return (start + slope * time + wave).clamp(-1, 1)


@pytest.fixture(scope="module")
def trained() -> tuple[RVQTokenizer, torch.Tensor]:
    torch.manual_seed(0)
    tok = RVQTokenizer(SMALL)
    data = smooth_chunks(2048)
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    tok.train()
    for _ in range(300):
        batch = data[torch.randint(0, len(data), (256,))]
        loss, _ = tok(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok.eval(), smooth_chunks(256, seed=1)


def test_rvq_error_falls_with_every_layer_on_held_out_chunks(trained) -> None:
    tok, test = trained
    rows = depth_errors(tok, test)
    mse = [r["mse"] for r in rows]
    assert all(b < a for a, b in itertools.pairwise(mse)), mse
    assert mse[-1] < 0.5 * mse[0]
    assert rows[0]["bits"] == 4.0 and rows[-1]["bits"] == 16.0  # 16 codes = 4 bits a layer
    assert len(rows[0]["mse_per_dim"]) == 3 and 0.5 < rows[-1]["gripper_sign_acc"] <= 1.0


def test_truncated_decoding_is_the_sum_of_the_first_k_codes(trained) -> None:
    tok, test = trained
    codes = tok.encode(test[:5])
    assert codes.shape == (5, 4, 1) and codes.dtype == torch.long
    per_layer = tok.rvq.get_codes_from_indices(codes.permute(0, 2, 1))  # [L, B, T', d]
    for k in (1, 2, 4):
        z = tok.rvq.project_out(per_layer[:k].sum(0))
        assert torch.allclose(tok.decode(codes, n_layers=k), tok._actions(z), atol=1e-6)
    assert torch.equal(tok.decode(codes), tok.decode(codes, n_layers=4))
    assert not torch.allclose(tok.decode(codes, n_layers=1), tok.decode(codes, n_layers=4))


def test_expected_decoding_hedges_uncertain_layers_toward_the_codebook_mean(trained) -> None:
    tok, test = trained
    codes = tok.encode(test[:5])  # [5, 4 layers, 1 step], 16 codes a layer
    onehot = torch.nn.functional.one_hot(codes, 16).float()
    for k in (1, 2, 4):  # a certain distribution decodes to its code
        assert torch.allclose(tok.decode_expected(onehot, k), tok.decode(codes, k), atol=1e-5)
    # layer 2 uniform: layer 1's code plus layer 2's mean codebook vector, not any one code
    hedged = onehot[:, :2].clone()
    hedged[:, 1] = 1 / 16
    books = tok.rvq.codebooks  # [4, 16, d]
    first = tok.rvq.get_codes_from_indices(codes[:, :1].permute(0, 2, 1))[0]  # [5, 1, d]
    z = tok.rvq.project_out(first + books[1].mean(0))
    assert torch.allclose(tok.decode_expected(hedged), tok._actions(z), atol=1e-5)
    assert not torch.allclose(tok.decode_expected(hedged), tok.decode(codes, 2), atol=1e-3)
    with pytest.raises(ValueError, match="distributions over the codebook"):
        tok.decode_expected(onehot * 2)
    with pytest.raises(ValueError, match=r"probs must be \[B, <= 4 layers, 1, 16\]"):
        tok.decode_expected(onehot[..., :8])
    with pytest.raises(ValueError, match="cannot decode with 3 layers"):
        tok.decode_expected(onehot[:, :2], n_layers=3)


def test_normalized_latent_keeps_its_scale_whatever_the_encoder() -> None:
    """tokenizer.latent_norm: the quantizer sees the encoder's latent layer-normalized, so a
    latent growing in scale (the diverging fits of experiments/rvq_adaptive) cannot outrun
    the EMA codebooks; tokenizers saved before the setting existed keep the raw latent."""
    torch.manual_seed(0)
    chunks = smooth_chunks(16)
    normed = RVQTokenizer({**SMALL, "latent_norm": True})
    z = normed._latent(chunks)
    torch.testing.assert_close(z.mean(-1), torch.zeros(16, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(16, 1), atol=1e-2, rtol=0)
    with torch.no_grad():
        normed.encoder[-1].weight.mul_(100.0)
        normed.encoder[-1].bias.mul_(100.0)
    torch.testing.assert_close(normed._latent(chunks), z, atol=1e-2, rtol=0)  # LayerNorm eps
    raw = RVQTokenizer(SMALL)  # the default of a settings dict without the field
    assert raw.settings.latent_norm is False
    raw.load_state_dict(normed.state_dict())  # no parameters of its own: same state dict
    encoded = normed.encoder(chunks.reshape(16, -1)).reshape(16, 1, 16)
    torch.testing.assert_close(raw._latent(chunks), encoded)  # the encoder's output as it is
    assert not torch.allclose(raw._latent(chunks), normed._latent(chunks), atol=0.1)


def test_tokenizer_fit_cosine_schedule_ends_at_zero_and_bad_names_are_refused() -> None:
    from vlaexp.tokenizers.stages import TokenizerModule

    module = TokenizerModule(SMALL, 1e-3, "cosine", 10)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and all(b < a for a, b in itertools.pairwise(lrs))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert isinstance(TokenizerModule(SMALL).configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ConfigError, match="lr_schedule"):  # refused before any fitting
        TokenizerModule(SMALL, 1e-3, "linear", 10)


def test_denoising_fit_encodes_noisy_chunks_and_reconstructs_the_clean_ones() -> None:
    """``tokenizer.fit_input_noise``: the encoder reads chunk + noise of that std, the loss
    compares the decoding with the clean chunk; 0 (the default) is the plain fit."""
    from vlaexp.tokenizers.stages import TokenizerModule

    torch.manual_seed(0)
    chunks = smooth_chunks(64)
    module = TokenizerModule(SMALL, input_noise=0.05).eval()  # eval: no quantizer dropout
    seen = []
    real = module.tokenizer._latent
    module.tokenizer._latent = lambda x: seen.append(x) or real(x)
    loss = module.training_step([chunks], 0)
    noise = seen[0] - chunks
    assert 0.045 < float(noise.std()) < 0.055 and abs(float(noise.mean())) < 0.005
    # the loss is the decoding of the noisy input's codes against the clean chunks
    quantized, _, commit = module.tokenizer.rvq(real(seen[0]))
    mse = torch.mean((module.tokenizer._actions(quantized) - chunks) ** 2)
    torch.testing.assert_close(loss, mse + commit.sum())
    plain = TokenizerModule(SMALL).eval()
    plain_real = plain.tokenizer._latent
    plain.tokenizer._latent = lambda x: seen.append(x) or plain_real(x)
    plain.training_step([chunks], 0)
    assert torch.equal(seen[1], chunks)  # the plain fit encodes the chunks themselves
    with pytest.raises(ValueError, match="inputs"):
        module.tokenizer(chunks, inputs=chunks[:, :4])
    with pytest.raises(ConfigError, match="fit_input_noise"):
        TokenizerModule(SMALL, input_noise=-0.1)


def test_quantizer_dropout_always_keeps_layers_one_and_two() -> None:
    torch.manual_seed(0)
    tok = RVQTokenizer({**SMALL, "kmeans_init": False}).train()
    kept = []
    for _ in range(40):
        _, indices, _ = tok.rvq(tok._latent(smooth_chunks(8)))
        layers_kept = (indices[0, 0] >= 0).sum().item()
        assert (indices[..., :2] >= 0).all()
        kept.append(layers_kept)
    assert min(kept) == 2 and max(kept) == 4  # the depth varies, never below two layers
    tok.eval()
    _, indices, _ = tok.rvq(tok._latent(smooth_chunks(8)))
    assert (indices >= 0).all()  # no dropout outside training


def test_rvq_bad_input_is_refused_with_clear_messages(trained) -> None:
    tok, test = trained
    with pytest.raises(ValueError, match=r"actions must be \[B, 8, 3\]"):
        tok.encode(torch.zeros(2, 10, 3))
    codes = tok.encode(test[:2])
    with pytest.raises(ValueError, match="cannot decode with 5 layers"):
        tok.decode(codes, n_layers=5)
    bad = codes.clone()
    bad[0, 0, 0] = 16
    with pytest.raises(ValueError, match=r"outside the codebook 0\.\.15"):
        tok.decode(bad)
    with pytest.raises(ConfigError, match="codebook_size=16 vs 256"):
        tok.check_matches(RVQSettings(**{**SMALL, "codebook_size": 256}))
    tok.check_matches(RVQSettings(**SMALL))
    with pytest.raises(ConfigError, match="layers >= 2"):
        RVQTokenizer({**SMALL, "layers": 1})


def test_code_usage_counts_dead_codes_and_perplexity() -> None:
    codes = torch.tensor([[[0], [1]], [[0], [1]], [[1], [1]], [[2], [1]]])  # [B=4, L=2, 1]
    layer1, layer2 = code_usage(codes, codebook_size=4)
    assert layer1["dead_codes"] == 1 and layer1["used"] == 0.75
    assert layer2["dead_codes"] == 3 and layer2["perplexity"] == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert layer1["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_dct_round_trip_error_is_bounded_by_the_quantization_step() -> None:
    chunks = smooth_chunks(64).numpy()
    tok = DCTTokenizer(DCTSettings(chunk_size=8, action_dim=3, keep=8, bits_per_coef=10))
    tokens = tok.encode(chunks)
    assert tokens.shape == (64, 24) and np.issubdtype(tokens.dtype, np.integer)
    err = tok.decode(tokens) - chunks
    # orthonormal DCT: the time-domain error energy equals the coefficient error energy
    assert np.mean(err**2) <= tok.settings.step**2 / 4 + 1e-12
    coarse = DCTTokenizer(DCTSettings(chunk_size=8, action_dim=3, keep=2, bits_per_coef=4))
    assert np.mean((coarse.decode(coarse.encode(chunks)) - chunks) ** 2) > np.mean(err**2)


def test_dct_malformed_tokens_are_decode_failures_never_zero_chunks() -> None:
    tok = DCTTokenizer(DCTSettings(chunk_size=8, action_dim=3, keep=2, bits_per_coef=4))
    good = tok.encode(smooth_chunks(2).numpy())
    with pytest.raises(DecodeError, match=r"must be \[B, 6\]"):
        tok.decode(good[:, :5])
    with pytest.raises(DecodeError, match=r"integers in \[-7, 7\]"):
        tok.decode(good + 100)
    chunks, ok, errors = tok.decode_batch([good[0], good[1][:3], good[1]])
    assert ok == [0, 2] and chunks.shape == (2, 8, 3) and len(errors) == 1
    assert errors[0].startswith("sequence 1:")
    np.testing.assert_allclose(chunks[1], tok.decode(good[1:2])[0])


def test_dct_curve_improves_with_bits() -> None:
    fit, test = smooth_chunks(128).numpy(), smooth_chunks(64, seed=3).numpy()
    rows = dct_curve(fit, test, [6, 12, 24, 48])
    mse = [r["mse"] for r in rows]
    assert all(b <= a for a, b in itertools.pairwise(mse)) and mse[-1] < mse[0]
    assert all(r["keep"] * 3 * r["bits_per_coef"] <= r["bits"] for r in rows)


def test_tokenizer_group_builds_each_tokenizer_from_config() -> None:
    from vlaexp.config.compose import compose_config
    from vlaexp.tokenizers import make_tokenizer

    assert make_tokenizer(compose_config(["tokenizer=none"]).tokenizer) is None
    rvq = make_tokenizer(compose_config(["tokenizer=rvq", "tokenizer.layers=3"]).tokenizer)
    assert isinstance(rvq, RVQTokenizer) and rvq.settings.layers == 3
    assert rvq.settings.decay == 0.99 and rvq.rvq.layers[0]._codebook.decay == 0.99
    assert rvq.settings.bits_per_layer == 8.0
    dct_tok = make_tokenizer(compose_config(["tokenizer=dct", "tokenizer.keep=3"]).tokenizer)
    assert isinstance(dct_tok, DCTTokenizer) and dct_tok.settings.bits == 3 * 7 * 4


def test_action_chunks_repeat_the_last_action_and_never_cross_episodes() -> None:
    from vlaexp.tokenizers.stages import action_chunks, quantile_normalize

    actions = np.arange(10, dtype=np.float32)[:, None]  # two episodes: frames 0-3 and 4-9
    chunks = action_chunks(actions, [range(0, 4), range(4, 10)], chunk=3)
    assert chunks.shape == (10, 3, 1)
    assert chunks[2, :, 0].tolist() == [2, 3, 3] and chunks[3, :, 0].tolist() == [3, 3, 3]
    assert chunks[4, :, 0].tolist() == [4, 5, 6] and chunks[9, :, 0].tolist() == [9, 9, 9]
    norm = quantile_normalize(np.array([[0.0], [5.0], [20.0]]), np.array([0.0]), np.array([10.0]))
    assert norm[:, 0].tolist() == [-1.0, 0.0, 1.0]  # clipped above q99


def test_tokenizer_fit_experiment_writes_the_analysis(tmp_path) -> None:
    import json

    out = run_vlaexp(
        [
            "+experiment=rvq_tokenizer_tabletop_spatial",
            "data.collect.episodes_per_task=2",
            "data.collect.task_ids=[0,1]",
            "data.split=[0.5,0.0,0.5]",
            "tokenizer.layers=3",
            "tokenizer.codebook_size=16",
            "tokenizer.hidden_dim=32",
            "tokenizer.latent_dim=8",
            "tokenizer.fit_steps=20",
            "tokenizer.fit_batch_size=32",
            "print_config=false",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    a = json.loads((tmp_path / "run" / "tokenizer" / "analysis.json").read_text())
    assert [r["layers"] for r in a["rvq"]] == [1, 2, 3] and [r["bits"] for r in a["rvq"]] == [
        4.0,
        8.0,
        12.0,
    ]
    assert [d["bits"] for d in a["dct"]] == [4, 8, 12] and len(a["code_usage"]) == 3
    assert a["splits"]["train"]["episodes"] == 2 and a["splits"]["test"]["episodes"] == 2
    assert (tmp_path / "run" / "tokenizer" / "mse_vs_bits.png").stat().st_size > 0
    saved = __import__("torch").load(tmp_path / "run" / "tokenizer" / "tokenizer.pt")
    assert saved["settings"]["layers"] == 3 and tuple(saved["stats"]["q01"].shape) == (7,)


def test_refinement_monitors_decide_per_sample() -> None:
    import math

    from vlaexp.config.tokenizer import MonitorConfig
    from vlaexp.tokenizers.adaptive import make_monitor

    # entropy: a uniform choice of 256 codes is ln 256 = 5.55 nats, a sure one ~0
    entropy = make_monitor(MonitorConfig(kind="entropy", threshold=2.0))
    logits = torch.zeros(2, 2, 1, 256)
    logits[1, :, :, 7] = 50.0
    assert entropy.should_refine(logits).tolist() == [True, False]
    near = torch.zeros(1, 2, 1, 256)
    near[..., :8] = 50.0  # 8 equally likely codes: ln 8 = 2.08 > 2
    assert bool(entropy.should_refine(near)) and math.log(8) > 2.0

    # action variance over the last 3 actions: env 0 holds still, env 1 oscillates
    variance = make_monitor(MonitorConfig(kind="action_variance", threshold=0.01, window=3))
    assert variance.should_refine(logits).tolist() == [True, True]  # no history yet
    for sign in (1.0, -1.0, 1.0, -1.0):
        variance.observe(torch.tensor([[0.2, 0.2], [sign * 0.5, 0.0]]))
    assert variance.should_refine().tolist() == [False, True]
    variance.reset()
    assert len(variance.recent) == 0

    # gripper distance: refine within 5 cm of the object
    distance = make_monitor(MonitorConfig(kind="gripper_distance", threshold=0.05))
    obs = {
        "observation.state": torch.tensor([[0.0, 0.0, 0.1, 9.0], [0.3, 0.0, 0.1, 9.0]]),
        "observation.object_position": torch.tensor([[0.0, 0.03, 0.1], [0.0, 0.0, 0.1]]),
    }
    assert distance.should_refine(observation=obs).tolist() == [True, False]
    # the state on the policy's device, the object's position on the CPU where the simulator
    # put it (the GPU comparison's crash; "meta" stands in for the GPU here)
    on_device = {**obs, "observation.state": obs["observation.state"].to("meta")}
    assert distance.should_refine(observation=on_device).device.type == "meta"
    with pytest.raises(ConfigError, match=r"object_key='observation\.object_position'"):
        distance.should_refine(observation={"observation.state": obs["observation.state"]})
    with pytest.raises(ConfigError, match="Valid choices: action_variance, entropy"):
        make_monitor(MonitorConfig(kind="loss"))
    with pytest.raises(ConfigError, match="threshold must be >= 0"):
        make_monitor(MonitorConfig(kind="entropy", threshold=-1.0))
