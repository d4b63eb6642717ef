"""RND networks, their training on the shared Trainer, scoring and the token stores."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vlaexp.errors import VlaexpError
from vlaexp.uncertainty.rnd import RND, RNDModule, score_cameras, spatial_map
from vlaexp.uncertainty.tokens import TokenStore, TokenStoreWriter, sample_tokens


def _linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def test_networks_have_fipers_shapes_init_and_frozen_target() -> None:
    rnd = RND(32)
    target = [(lin.in_features, lin.out_features) for lin in _linears(rnd.target)]
    pred = [(lin.in_features, lin.out_features) for lin in _linears(rnd.predictor)]
    assert target == [(32, 1024), (1024, 2048), (2048, 4096), (4096, 512)]
    assert pred == [(32, 1024), (1024, 2048), (2048, 4096), (4096, 2048), (2048, 1024), (1024, 512)]
    acts = [type(m).__name__ for m in rnd.predictor if not isinstance(m, nn.Linear)]
    assert acts == ["LeakyReLU", "LeakyReLU", "LeakyReLU", "ReLU", "ReLU"]
    for lin in _linears(rnd):
        assert torch.count_nonzero(lin.bias) == 0
        w = lin.weight.double()
        small = w if w.shape[0] <= w.shape[1] else w.T  # orthogonal rows (or columns), gain sqrt 2
        torch.testing.assert_close(
            small @ small.T, 2 * torch.eye(small.shape[0], dtype=w.dtype), atol=1e-4, rtol=0
        )
    assert not any(p.requires_grad for p in rnd.target.parameters())
    assert all(p.requires_grad for p in rnd.predictor.parameters())


def test_training_makes_familiar_tokens_score_lower_than_novel_ones() -> None:
    torch.manual_seed(0)
    d = 16
    center = torch.randn(d)
    familiar = center + 0.1 * torch.randn(4096, d)
    novel = -center + 0.1 * torch.randn(256, d)
    module = RNDModule(d, lr=3e-4)
    target_before = [p.clone() for p in module.rnd.target.parameters()]
    with torch.no_grad():
        before = float(module(familiar[:256]).mean())
    trainer = pl.Trainer(
        max_steps=60,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(familiar.half(), batch_size=128, shuffle=True))
    module.eval()
    with torch.no_grad():
        after, after_novel = float(module(familiar[:256]).mean()), float(module(novel).mean())
    assert after < before / 5  # the predictor learned the familiar region
    assert after_novel > 3 * after  # and it did not learn the rest
    for a, b in zip(target_before, module.rnd.target.parameters(), strict=True):
        assert torch.equal(a, b)  # the target never moves


def test_spatial_maps_and_camera_scores() -> None:
    scores = torch.arange(256.0)
    grid = spatial_map(scores)
    assert grid.shape == (16, 16) and grid[1, 0] == 16  # row-major patch order
    up = spatial_map(scores[None], 224)
    assert up.shape == (1, 224, 224)
    assert up[0, 0, 0] < up[0, -1, -1]
    with pytest.raises(ValueError, match="square"):
        spatial_map(torch.zeros(250))
    torch.manual_seed(0)
    models = {"agentview": RND(8).eval(), "wrist": RND(8).eval()}
    tokens = {c: torch.randn(256, 8) for c in models}
    out = score_cameras(models, tokens)
    for c in models:
        assert out[c] == pytest.approx(float(models[c](tokens[c]).detach().mean()))
        assert out["spatial_maps"][c].shape == (16, 16)
    assert out["overall"] == pytest.approx((out["agentview"] + out["wrist"]) / 2)
    with pytest.raises(KeyError, match="no RND for camera"):
        score_cameras({"agentview": models["agentview"]}, tokens)
    with pytest.raises(ValueError, match="built for 8"):
        models["wrist"](torch.randn(3, 9))
    # bfloat16 weights score float32 tokens in bfloat16 and return float32 errors close to
    # the float32 model's
    half = RND(8).eval()
    half.load_state_dict(models["wrist"].state_dict())
    half = half.to(torch.bfloat16)
    got = half(tokens["wrist"])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, models["wrist"](tokens["wrist"]).detach(), rtol=0.1, atol=1e-3)


def test_token_store_round_trip_shards_and_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 6)).astype(np.float32) for n in (5, 7, 1, 9)]
    writer = TokenStoreWriter(tmp_path / "store", dim=6, shard_size=8)
    for b in batches:
        writer.append(torch.from_numpy(b))
    with pytest.raises(VlaexpError, match="not a finished token store"):
        TokenStore(tmp_path / "store")  # before close: no index
    writer.close()
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert [s["n"] for s in index["shards"]] == [8, 8, 6]
    store = TokenStore(tmp_path / "store")
    want = np.concatenate(batches).astype(np.float16).astype(np.float32)
    assert len(store) == 22
    got = np.stack([store[i].numpy() for i in range(len(store))])
    np.testing.assert_array_equal(got, want)
    assert isinstance(store.shards[0], np.memmap)
    train, val = store.split(0.2, seed=3)
    assert len(val) == 4 and not set(train) & set(val) and len(train) + len(val) == 22
    assert store.split(0.2, seed=3) == (train, val) and store.split(0.2, seed=4) != (train, val)
    assert len(next(iter(DataLoader(Subset(store, train), batch_size=4)))) == 4
    with pytest.raises(ValueError, match=r"\[n, 6\]"):
        TokenStoreWriter(tmp_path / "other", dim=6).append(np.zeros((2, 5)))
    with pytest.raises(VlaexpError, match="exists"):
        TokenStoreWriter(tmp_path / "store", dim=6)


def test_token_sampling_is_seeded_and_without_replacement() -> None:
    tokens = torch.arange(256.0)[:, None].expand(256, 4)
    a = sample_tokens(tokens, 64, torch.Generator().manual_seed(0))
    b = sample_tokens(tokens, 64, torch.Generator().manual_seed(0))
    c = sample_tokens(tokens, 64, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:, 0].tolist())) == 64
    with pytest.raises(ValueError):
        sample_tokens(tokens, 300, torch.Generator())
