"""The RVQ policy: codes predicted layer by layer on Pi0.5's backbone, decoded by the frozen
tokenizer; dense / coarse / adaptive decoding; its checkpoints and errors; the comparison stage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import run_vlaexp
from tests.test_pi0_policy import STATS, make_batch
from vlaexp.config.compose import compose_config
from vlaexp.config.tokenizer import GROUP_ONLY
from vlaexp.errors import ConfigError, MissingPathError
from vlaexp.policies import rvq as rvq_module
from vlaexp.policies.factory import load_pretrained, make_policy
from vlaexp.tokenizers import compare
from vlaexp.tokenizers.rvq import RVQTokenizer

TOKENIZER = [
    "tokenizer=rvq",
    "tokenizer.layers=4",
    "tokenizer.codebook_size=16",
    "tokenizer.hidden_dim=32",
    "tokenizer.latent_dim=8",
    "tokenizer.latent_steps=2",
]


def fitted_tokenizer(directory: Path, overrides: list[str] = TOKENIZER, steps: int = 30) -> Path:
    """A tokenizer.pt as the tokenizer_fit stage writes it, fitted briefly on smooth chunks
    (normalized units; statistics q01 = -2, q99 = 2 as in STATS)."""
    cfg = compose_config(overrides)
    settings = {
        k: v
        for k, v in OmegaConf.to_container(cfg.tokenizer, resolve=True).items()
        if k not in GROUP_ONLY
    }
    torch.manual_seed(0)
    tok = RVQTokenizer(settings)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    t = torch.linspace(0, 1, settings["chunk_size"])
    for _ in range(steps):
        chunks = torch.sin(t[None, :, None] * 3 + torch.randn(64, 1, 7)).clamp(-1, 1)
        loss, _ = tok(chunks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = directory / "tokenizer.pt"
    stats = {"q01": -2 * torch.ones(7), "q99": 2 * torch.ones(7)}
    torch.save({"settings": settings, "state_dict": tok.state_dict(), "stats": stats}, path)
    return path


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    return fitted_tokenizer(tmp_path_factory.mktemp("rvq_tok"))


def rvq_policy(tokenizer_path: Path | None, *overrides: str, tokenizer=TOKENIZER):
    extra = [f"policy.action_tokenizer={tokenizer_path}"] if tokenizer_path else []
    cfg = compose_config(["policy=rvq_policy_tiny", *tokenizer, *extra, *overrides])
    return make_policy(OmegaConf.to_container(cfg.policy, resolve=True), dataset_stats=STATS)


def test_learns_the_codes_and_decodes_them_at_every_depth(tokenizer_file, tmp_path) -> None:
    torch.manual_seed(0)
    policy = rvq_policy(tokenizer_file, "policy.augment.enabled=false")
    batch = make_batch(b=4)
    tok = policy.action_tokenizer
    target = tok.encode(policy.normalize_actions(batch["action"]))  # [B, 4 layers, 2 steps]
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    policy.train()
    for _ in range(150):
        loss, info = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05 and all(float(info[f"code_acc_l{k}"]) == 1.0 for k in (1, 2))
    assert not any(p.requires_grad for p in tok.parameters())  # the tokenizer stays frozen
    policy.eval()
    # validation also reports the decoded chunks' error: codes all right -> the tokenizer's own
    _, val = policy(batch)
    assert "chunk_mse_l2" not in info  # training steps skip the decoding
    for k in (2, 4):
        assert float(val[f"chunk_mse_l{k}"]) == pytest.approx(float(val[f"recon_mse_l{k}"]))
        # nearly certain codes: their expected vectors decode close to the codes' chunk
        assert float(val[f"chunk_mse_expected_l{k}"]) == pytest.approx(
            float(val[f"recon_mse_l{k}"]), rel=0.5, abs=1e-3
        )
    assert float(val["recon_mse_l4"]) != float(val["recon_mse_l2"])  # two depths decoded
    fresh = rvq_policy(tokenizer_file, "policy.augment.enabled=false").eval()
    _, untrained = fresh(batch)
    # wrong codes decode to other chunks (not necessarily worse ones: brittle codes)
    assert float(untrained["code_acc_l1"]) < 1.0
    assert float(untrained["chunk_mse_l4"]) != pytest.approx(float(untrained["recon_mse_l4"]))
    # an untrained head hedges: its expected vectors are not its most likely codes
    assert float(untrained["chunk_mse_expected_l4"]) != pytest.approx(
        float(untrained["chunk_mse_l4"])
    )
    dense = policy.predict_codes(batch, "dense")
    assert torch.equal(dense["codes"], target)  # free-running greedy decoding, layer by layer
    assert dense["layers"].tolist() == [4] * 4
    chunk = policy.predict_action_chunk(batch, "dense")
    expected = policy.unnormalize_actions(tok.decode(target))
    torch.testing.assert_close(chunk, expected)
    coarse = policy.predict_action_chunk(batch, "coarse")
    torch.testing.assert_close(coarse, policy.unnormalize_actions(tok.decode(target, n_layers=2)))
    assert policy.last_chunk["layers"].tolist() == [2] * 4
    assert not torch.allclose(coarse, chunk)  # layers 3-4 add detail

    # adaptive: the entropy monitor refines exactly the samples it flags
    with mock.patch.object(
        policy.monitor, "should_refine", return_value=torch.tensor([True, False, False, True])
    ):
        mixed = policy.predict_action_chunk(batch, "adaptive")
    assert policy.last_chunk["layers"].tolist() == [4, 2, 2, 4]
    torch.testing.assert_close(mixed[[0, 3]], chunk[[0, 3]])
    torch.testing.assert_close(mixed[[1, 2]], coarse[[1, 2]])

    # save and load: no tokenizer file needed, same codes
    policy.save_pretrained(tmp_path / "pm")
    with mock.patch.object(rvq_module, "tokenizer_checkpoint", side_effect=AssertionError):
        loaded = load_pretrained(tmp_path / "pm")
    assert torch.equal(loaded.predict_codes(batch, "dense")["codes"], target)


def test_expected_code_decoding_acts_from_every_decoded_layers_distribution(
    tokenizer_file,
) -> None:
    """predict_codes returns each decoded layer's logits (refined rows all layers, drafts
    their first two), and policy.code_decoding=expected decodes every sample from the
    expected codebook vectors of the layers it was given."""
    from dataclasses import replace

    torch.manual_seed(2)
    policy = rvq_policy(tokenizer_file).eval()  # untrained: uncertain codes
    batch = make_batch(b=3)
    dense = policy.predict_codes(batch, "dense")
    flags = torch.tensor([True, False, True])
    with mock.patch.object(policy.monitor, "should_refine", return_value=flags):
        out = policy.predict_codes(batch, "adaptive")
    logits = out["logits"]
    assert logits.shape == (3, 4, 2, 16)
    torch.testing.assert_close(logits[:, :2], out["draft_logits"])
    torch.testing.assert_close(logits[[0, 2]], dense["logits"][[0, 2]])  # refined: all layers
    assert (logits[1, 2:] == 0).all()  # a draft has no deeper logits
    assert torch.equal(logits[[0, 2]].argmax(-1), out["codes"][[0, 2]])

    argmax_chunk = policy.predict_action_chunk(batch, "dense")
    policy.config = replace(policy.config, code_decoding="expected")
    with mock.patch.object(policy.monitor, "should_refine", return_value=flags):
        chunk = policy.predict_action_chunk(batch, "adaptive")
    tok = policy.action_tokenizer
    probs = dense["logits"].float().softmax(-1)
    want_refined = policy.unnormalize_actions(tok.decode_expected(probs[[0, 2]], n_layers=4))
    torch.testing.assert_close(chunk[[0, 2]], want_refined)
    want_draft = policy.unnormalize_actions(tok.decode_expected(probs[[1], :2], n_layers=2))
    torch.testing.assert_close(chunk[[1]], want_draft)
    assert not torch.allclose(chunk[[0, 2]], argmax_chunk[[0, 2]])  # hedged, not committed
    with pytest.raises(ConfigError, match=r"policy\.code_decoding must be one of"):
        rvq_policy(tokenizer_file, "policy.code_decoding=sampled")


def test_layer_l_sees_only_the_codes_of_earlier_layers(tokenizer_file) -> None:
    """Changing layer j's codes changes the logits of layers > j only (the causal blocks),
    and coarse decoding runs 2 expert passes where dense runs 4."""
    torch.manual_seed(1)
    policy = rvq_policy(tokenizer_file).eval()
    batch = make_batch(b=2)
    images, masks, tokens, token_mask, _ = policy._inputs(batch)
    codes = torch.randint(0, 16, (2, 4, 2))
    prefix = policy.model.embed_prefix(images, masks, tokens, token_mask)

    def logits(c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return policy.code_head.logits(policy._suffix_pass(c, 4, prefix=prefix), 0, 4)

    base = logits(codes)
    changed = codes.clone()
    changed[:, 1] = (changed[:, 1] + 5) % 16  # layer 2's codes
    after = logits(changed)
    torch.testing.assert_close(after[:, :2], base[:, :2])  # layers 1-2 do not see them
    assert (after[:, 2:] - base[:, 2:]).abs().amax() > 1e-4  # layers 3-4 do

    calls = []
    real = rvq_module.joint_forward

    def counting(streams, *args, **kwargs):
        calls.append(len(streams))
        return real(streams, *args, **kwargs)

    with mock.patch.object(rvq_module, "joint_forward", side_effect=counting):
        policy.predict_codes(batch, "coarse")
        coarse_passes = len(calls)
        calls.clear()
        policy.predict_codes(batch, "dense")
    assert coarse_passes == 2 and len(calls) == 4


def test_rvq_policy_errors(tokenizer_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs tokenizer=rvq"):
        cfg = compose_config(["policy=rvq_policy_tiny", "tokenizer=none"])
        # chunk_size/action_dim come from the tokenizer group: give them so only rvq is wrong
        OmegaConf.update(cfg, "policy.chunk_size", 10)
        OmegaConf.update(cfg, "policy.action_dim", 7)
        make_policy(OmegaConf.to_container(cfg.policy, resolve=True), dataset_stats=STATS)
    with pytest.raises(ConfigError, match=r"needs policy\.action_tokenizer"):
        rvq_policy(None)
    with pytest.raises(MissingPathError):
        rvq_policy(tmp_path / "nothing_here")
    with pytest.raises(ConfigError, match=r"layers=4 vs 8"):  # checkpoint of another config
        rvq_policy(tokenizer_file, tokenizer=[*TOKENIZER, "tokenizer.layers=8"])
    with pytest.raises(ConfigError, match=r"policy\.chunk_size=12 but the RVQ tokenizer.s is 10"):
        rvq_policy(tokenizer_file, "policy.chunk_size=12")
    with pytest.raises(ConfigError, match=r"policy\.decoding"):
        rvq_policy(tokenizer_file, "policy.decoding=fine")
    with pytest.raises(ConfigError, match="draft_layers=5"):
        rvq_policy(tokenizer_file, "policy.draft_layers=5")


def test_backbone_loads_from_a_pi05_checkpoint(tokenizer_file, tmp_path) -> None:
    """policy.backbone takes a Pi0.5 checkpoint's vision tower, VLM and expert and leaves
    its flow heads out; a checkpoint of other widths is an error listing the tensors."""
    from tests.test_pi0_policy import tiny

    pi05 = tiny("pi05_tiny")
    pi05.save_pretrained(tmp_path / "pi05")
    policy = rvq_policy(tokenizer_file, f"policy.backbone={tmp_path / 'pi05'}")
    for name in (
        "vlm.layers.0.mlp.up_proj.weight",
        "vision_tower.vision_model.post_layernorm.bias",
    ):
        torch.testing.assert_close(policy.model.state_dict()[name], pi05.model.state_dict()[name])
    with pytest.raises(Exception, match="missing"):
        rvq_policy(tokenizer_file, f"policy.backbone={tmp_path / 'pi05'}", "policy.expert.width=32")
    # its checkpoint loads where the backbone it started from is gone, with its own weights
    policy.save_pretrained(tmp_path / "rvq")
    shutil.rmtree(tmp_path / "pi05")
    loaded = load_pretrained(tmp_path / "rvq")
    assert loaded.config.backbone is None
    torch.testing.assert_close(loaded.state_dict(), policy.state_dict())


def test_object_position_reaches_the_gripper_distance_monitor(tokenizer_file) -> None:
    """The tabletop observation carries the task object's position; the policy batch passes
    it to the gripper_distance monitor."""
    from vlaexp.sim.factory import make_task_suite

    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=64"])
    suite = make_task_suite(cfg.task_suite, ("agentview", "wrist"))
    env = suite.make_env(0)
    obs = env.reset(suite.eval_seeds(0)[0])
    target = env.task.carried[0]
    assert obs["object_position"].tolist() == pytest.approx(env.object_pos(target).tolist())
    policy = rvq_policy(
        tokenizer_file,
        tokenizer=[*TOKENIZER, "tokenizer.monitor.kind=gripper_distance"],
    )
    batch = policy.observations_to_batch([obs], [env.instruction])
    far = float(
        (batch["observation.state"][0, :3] - batch["observation.object_position"][0]).norm()
    )
    policy.monitor.threshold = far + 0.01
    assert policy.monitor.should_refine(None, batch).tolist() == [True]
    policy.monitor.threshold = far - 0.01
    assert policy.monitor.should_refine(None, batch).tolist() == [False]


def test_rvq_experiment_fits_trains_and_compares_decodings(tmp_path) -> None:
    def run(name: str, *overrides: str):
        """The experiment at tiny widths on CPU, one 10-step evaluation episode of task 0."""
        return run_vlaexp(
            [
                "+experiment=rvq_policy_tabletop_spatial",
                "policy=rvq_policy_tiny",
                "trainer=cpu",
                "task_suite.resolution=64",
                *TOKENIZER[1:],
                *overrides,
                "eval.task_ids=[0]",
                "eval.n_episodes=1",
                "eval.max_steps=10",
                "print_config=false",
                f"paths.root_dir={tmp_path}",
                f"hydra.run.dir={tmp_path}/{name}",
            ],
            cwd=tmp_path,
            timeout=600,
        )

    out = run(
        "run",
        "data.collect.episodes_per_task=2",
        "data.collect.use_videos=false",
        "data.collect.n_workers=1",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.split=[0.5,0.0,0.5]",
        "tokenizer.fit_steps=10",
        "tokenizer.fit_batch_size=32",
        "tokenizer.monitor.threshold=0.0",  # entropy > 0: adaptive refines every chunk
        "rvq_compare.thresholds=[100.0]",  # above ln 256: that row refines none
        # the gripper is always within 100 m of the cube, never within 0 m: all, then none
        "rvq_compare.monitors=[{kind:gripper_distance,threshold:100.0},"
        "{kind:gripper_distance,threshold:0.0}]",
        "rvq_compare.expected_modes=[coarse]",
        "trainer.max_steps=4",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.step_checkpoint.save_freq=4",
        "stages=[collect,tokenizer_fit,train,rvq_compare]",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "rvq_compare" / "comparison.json").read_text())
    rows = {r["decoding"]: r for r in result["rows"]}
    assert list(rows) == [
        "dense",
        "coarse",
        "adaptive",
        "adaptive_t100",
        "adaptive_gripper_distance_100",
        "adaptive_gripper_distance_0",
        "coarse_expected",
    ]
    assert rows["dense"]["mean_layers"] == 4.0 and rows["coarse"]["mean_layers"] == 2.0
    assert rows["adaptive"]["refined_share"] == 1.0 and rows["coarse"]["refined_share"] == 0.0
    assert (
        rows["adaptive_t100"]["refined_share"] == 0.0 and rows["adaptive_t100"]["threshold"] == 100
    )
    near, never = rows["adaptive_gripper_distance_100"], rows["adaptive_gripper_distance_0"]
    assert near["refined_share"] == 1.0 and never["refined_share"] == 0.0
    assert near["monitor"]["kind"] == "gripper_distance" and never["mean_layers"] == 2.0
    assert rows["dense"]["step_latency_vs_dense"] == 1.0
    assert rows["coarse_expected"]["mean_layers"] == 2.0
    assert rows["coarse_expected"]["code_decoding"] == "expected"
    # the other rows act on their most likely codes
    assert {rows[m]["code_decoding"] for m in list(rows)[:-1]} == {"argmax"}
    assert result["monitor"]["threshold"] == 0.0  # the run's monitor, back after the sweep
    # 10 steps, a chunk every 5 actions: 2 chunks per mode
    assert all(r["chunks"] == 2 and r["chunk_ms_median"] > 0 for r in rows.values())
    # the comparison's monitor is its run's, not the one saved with the policy: the same
    # policy compared again at threshold 100 refines nothing in its adaptive row, here of
    # expected vectors alone (no argmax row: the dense expected row is the reference). Its
    # flow row's path holds no policy: that row fails, after the RVQ rows' table is written
    out = run(
        "again",
        "tokenizer.monitor.threshold=100.0",
        "stages=[rvq_compare]",
        "rvq_compare.modes=[]",
        "rvq_compare.expected_modes=[dense,adaptive]",
        f"policy.path={tmp_path / 'run'}",
        f"rvq_compare.flow_policy={tmp_path / 'run' / 'tokenizer'}",
    )
    assert out.returncode != 0 and "rvq_compare.flow_policy" in out.stderr, out.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "rvq_compare" / "comparison.json").read_text())
    assert [r["decoding"] for r in again["rows"]] == ["dense_expected", "adaptive_expected"]
    md = (tmp_path / "again" / "rvq_compare" / "comparison.md").read_text()
    assert "| adaptive_expected | " in md
    assert again["monitor"]["threshold"] == 100.0
    dense_e, adaptive_e = again["rows"]
    assert adaptive_e["refined_share"] == 0.0 and adaptive_e["mean_layers"] == 2.0
    assert adaptive_e["code_decoding"] == "expected" and dense_e["mean_layers"] == 4.0
    assert dense_e["step_latency_vs_dense"] == 1.0
    saved = json.loads(
        (tmp_path / "run" / "checkpoints" / "last" / "pretrained_model" / "config.json").read_text()
    )
    assert saved["action_tokenizer"] == str(tmp_path / "run" / "tokenizer" / "tokenizer.pt")


def test_compare_monitor_rows_are_checked_before_any_row_runs():
    rows = compare.monitor_rows([{"kind": "action_variance", "threshold": 0.5, "window": 3}])
    assert rows == [
        ("adaptive_action_variance_0.5", {"kind": "action_variance", "threshold": 0.5, "window": 3})
    ]
    for bad, says in [
        ({"kind": "gripper_distance"}, "names its kind and threshold"),
        ({"kind": "distance", "threshold": 0.1}, "kind must be one of"),
        ({"kind": "entropy", "threshold": -1.0}, "threshold >= 0"),
        ({"kind": "entropy", "threshold": 1.0, "treshold": 2.0}, "unknown fields ['treshold']"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            compare.monitor_rows([bad])


def test_compare_with_no_row_to_run_says_so_before_loading_anything():
    cfg = OmegaConf.create(
        {
            "rvq_compare": {
                "modes": [],
                "thresholds": [],
                "monitors": [],
                "expected_modes": [],
                "flow_policy": None,
            }
        }
    )
    with pytest.raises(ConfigError, match="no row to run"):
        compare.compare_stage(SimpleNamespace(cfg=cfg))
    cfg.rvq_compare.modes = ["dense", "fine"]
    with pytest.raises(ConfigError, match=re.escape("rvq_compare.modes must be a list")):
        compare.compare_stage(SimpleNamespace(cfg=cfg))


def test_compare_steady_rate_leaves_out_the_first_chunk():
    # the first call captures the CUDA graphs (5 s); the rest serve 30 steps at 20 ms a chunk
    assert compare.steady_ms_per_step([5.0, 0.01, 0.03], 30) == pytest.approx(2.0)
    assert compare.steady_ms_per_step([0.04], 8) == pytest.approx(5.0)  # one chunk: itself
    assert compare.steady_ms_per_step([], 0) is None


def test_compare_puts_both_policies_in_one_mode_uncompiled():
    from tests.test_pi0_policy import tiny

    flow = tiny("pi05_tiny", "policy.compile=true")
    assert flow.model._sampling_compiled  # a run trained with compile comes back compiled
    compare.act_like(flow, cuda_graphs=False)
    assert not flow.model._sampling_compiled and "encode_prefix" not in flow.model.__dict__
    assert flow.config.compile is False and flow.config.cuda_graphs is False
    compare.act_like(flow, cuda_graphs=True)
    assert flow.config.cuda_graphs is True
    # uncompiled, it still acts
    chunk = flow.eval().predict_action_chunk(make_batch(b=1))
    assert chunk.shape == (1, flow.config.chunk_size, 7) and torch.isfinite(chunk).all()


def test_set_monitor_changes_what_adaptive_decoding_refines_and_is_saved(
    tokenizer_file, tmp_path
) -> None:
    policy = rvq_policy(tokenizer_file, "tokenizer.monitor.threshold=0.0").eval()
    batch = make_batch(b=2)
    policy.predict_action_chunk(batch)
    assert policy.last_chunk["refined"].all()  # any entropy is above 0
    policy.set_monitor({"kind": "entropy", "threshold": 100.0})
    policy.predict_action_chunk(batch)
    assert not policy.last_chunk["refined"].any()  # none reaches ln 256 < 100
    policy.save_pretrained(tmp_path / "pm")
    loaded = load_pretrained(tmp_path / "pm")
    assert loaded.monitor_config.threshold == 100.0 and loaded.monitor.threshold == 100.0
    with pytest.raises(ConfigError, match="threshold"):
        policy.set_monitor({"kind": "entropy", "threshold": -1.0})
    assert policy.monitor.threshold == 100.0  # a refused monitor leaves the one it had
