"""SimRunner: parallel lockstep evaluation, eval_info.json, videos, failure modes, rollouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlaexp.config.compose import compose_config
from vlaexp.sim.actors import RandomPolicy, ScriptedExpert
from vlaexp.sim.base import FAILURE_MODES
from vlaexp.sim.runner import SimRunner
from vlaexp.sim.workers import SuiteSpec


def spec(resolution: int = 64, suite: str = "tabletop_spatial") -> SuiteSpec:
    from omegaconf import OmegaConf

    cfg = compose_config([f"task_suite={suite}", f"task_suite.resolution={resolution}"]).task_suite
    return SuiteSpec(OmegaConf.to_container(cfg, resolve=True), ["agentview", "wrist"])


class CountingRandomPolicy(RandomPolicy):
    """A random policy that remembers how often it was reset (the runner must reset it)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


def test_expert_succeeds_in_parallel_workers_like_in_process(tmp_path: Path) -> None:
    kwargs = {"n_episodes": 2, "task_ids": [0, 1], "n_videos": 1}
    parallel = SimRunner(spec(), tmp_path / "par", n_envs=2, **kwargs)
    metrics = parallel.run(ScriptedExpert())
    local = SimRunner(spec(), tmp_path / "loc", n_envs=1, **kwargs)
    assert local.run(ScriptedExpert())["eval/pc_success"] == metrics["eval/pc_success"]
    assert metrics["eval/pc_success"] >= 75.0
    assert metrics["eval/n_episodes"] == 4
    info = json.loads((tmp_path / "par" / "eval_info.json").read_text())
    loc_info = json.loads((tmp_path / "loc" / "eval_info.json").read_text())
    assert [r["steps"] for r in info["per_episode"]] == [
        r["steps"] for r in loc_info["per_episode"]
    ]
    assert [r["seed"] for r in info["per_episode"]] == [r["seed"] for r in loc_info["per_episode"]]
    suite = parallel.suite
    assert [r["seed"] for r in info["per_episode"]] == suite.eval_seeds(0)[:2] + suite.eval_seeds(
        1
    )[:2]
    assert set(info["aggregated"]) >= {"pc_success", "avg_sum_reward", "avg_max_reward", "eval_s"}
    assert len(info["video_paths"]) == 1 and Path(info["video_paths"][0]).stat().st_size > 1000
    for row in info["per_episode"]:
        assert (row["failure_mode"] is None) == row["success"]
        assert row["grasp_xy_error"] < 0.005  # the expert closes centred on the cube
    assert metrics["eval/n_grasps"] == 4 and metrics["eval/grasp_xy_error_median"] < 0.005


def test_reseeded_noise_continues_the_same_state_under_other_noise() -> None:
    """reseed_noise: from the step it is called, the DART noise comes from another stream
    (or none): the state reached until then is the recording's, what follows differs."""
    from vlaexp.sim.workers import LocalWorker

    def states(stream: list[int] | None, at: int = 2, n: int = 4) -> np.ndarray:
        w = LocalWorker(spec())
        w.send("reset", 0, 777, True, 0.1, None)
        out = [w.recv()["obs"]["state"]]
        for t in range(n):
            if t == at:
                w.send("reseed_noise", stream)
                w.recv()
            w.send("step", None)
            out.append(w.recv()["obs"]["state"])
        w.close()
        return np.array(out)

    a, again, other, clean = states([1]), states([1]), states([2]), states(None)
    np.testing.assert_array_equal(a, again)  # a stream is a seed: the same continuation
    for b in (other, clean):
        np.testing.assert_array_equal(a[:3], b[:3])  # the same state before the reseed
        assert not np.allclose(a[3:, :3], b[3:, :3])  # other noise after it


def test_dart_noise_moves_the_env_but_the_episode_keeps_the_experts_actions() -> None:
    """expert_noise: the env executes the expert's action plus seeded noise on x, y, z; the
    recorded action is the expert's own, and the expert corrects the drift."""
    from vlaexp.sim.tabletop.env import POS_SCALE
    from vlaexp.sim.workers import LocalWorker

    sigma, seed = 0.1, 12345

    def first_steps(
        noise: float, phases: list[str] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        w = LocalWorker(spec())
        w.send("reset", 0, seed, True, noise, phases)
        states, actions = [w.recv()["obs"]["state"]], []
        for _ in range(3):
            w.send("step", None)
            r = w.recv()
            states.append(r["obs"]["state"])
            actions.append(r["action"])
            assert r["phase"] == "approach"  # the first steps head for the cube
        w.close()
        return states, actions

    clean_states, clean_actions = first_steps(0.0)
    noisy_states, noisy_actions = first_steps(sigma)
    # same start, same first decision; then the executed noise shows in the TCP position
    np.testing.assert_array_equal(clean_actions[0], noisy_actions[0])
    drift = noisy_states[1][:3] - clean_states[1][:3]
    expected = np.random.default_rng([seed, 0xDA27]).normal(0.0, sigma, 3) * POS_SCALE
    np.testing.assert_allclose(drift, expected, atol=1e-3)
    assert np.linalg.norm(drift) > 2e-3
    # the next recorded action already differs: the expert reacts to where it ended up
    assert not np.allclose(clean_actions[1][:3], noisy_actions[1][:3])
    assert all(a[6] == c[6] for a, c in zip(noisy_actions, clean_actions, strict=True))
    # seeded: the same noisy episode again
    _, again_actions = first_steps(sigma)
    np.testing.assert_array_equal(np.array(again_actions), np.array(noisy_actions))
    # noise limited to other phases leaves the approach exactly as without noise
    carry_only_states, _ = first_steps(sigma, ["carry"])
    np.testing.assert_array_equal(np.array(carry_only_states), np.array(clean_states))
    # and the corrected episodes still succeed, grasps still centred
    metrics = SimRunner(
        spec(), None, n_episodes=2, task_ids=[0], n_videos=0, expert_noise=sigma
    ).run(ScriptedExpert())
    assert metrics["eval/pc_success"] == 100.0
    assert metrics["eval/grasp_xy_error_median"] < 0.006
    with pytest.raises(ValueError, match="expert_noise"):
        SimRunner(spec(), None, n_videos=0, expert_noise=-0.1)


def test_random_policy_fails_with_named_failure_modes_and_is_reset_every_episode(
    tmp_path: Path,
) -> None:
    policy = CountingRandomPolicy()
    runner = SimRunner(
        spec(), tmp_path, n_episodes=2, task_ids=[0], n_videos=0, max_steps=40, n_envs=1
    )
    metrics = runner.run(policy)
    assert metrics["eval/pc_success"] == 0.0
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert all(r["failure_mode"] in FAILURE_MODES for r in info["per_episode"])
    assert all(r["steps"] == 40 for r in info["per_episode"])
    assert policy.resets == 2  # one batch per episode with one env


class TorchNoisePolicy:
    """Acts with noise drawn from torch's global generator, as Pi0's sampler draws its
    flow-matching noise."""

    def reset(self) -> None:
        """Nothing to forget between episodes."""

    def act_batch(self, observations: list[dict[str, Any]], instructions: list[str]) -> np.ndarray:
        return (torch.rand(len(observations), 7) * 2 - 1).numpy()


def test_policy_noise_is_seeded_by_the_episodes_and_the_callers_generator_kept() -> None:
    """Same seeds -> same rollouts whatever torch's generator held before (as after a
    training run vs alone from disk); other seeds -> other noise; the caller's state kept."""

    def rollouts(seeds: dict[int, list[int]]) -> list[np.ndarray]:
        runner = SimRunner(
            spec(), None, task_ids=[0], seeds=seeds, n_videos=0, max_steps=6,
            n_envs=1, keep_episodes=True,
        )  # fmt: skip
        before = torch.get_rng_state()
        runner.run(TorchNoisePolicy())
        assert torch.equal(torch.get_rng_state(), before)
        return [np.stack(ep.actions) for ep in runner.episodes]

    torch.manual_seed(1)
    first = rollouts({0: [11, 12]})
    torch.manual_seed(2)
    torch.rand(1000)
    again = rollouts({0: [11, 12]})
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.allclose(first[0], first[1])  # each episode its own noise
    other = rollouts({0: [13, 12]})
    assert not np.allclose(first[0], other[0])


def test_unknown_task_id_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"eval.task_ids \[99\] not in suite 'tabletop_spatial'"):
        SimRunner(spec(), tmp_path, task_ids=[0, 99])


def test_recorded_rollouts_round_trip_through_lerobot(tmp_path: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.collect import EpisodeRecorder
    from vlaexp.data.episodes import episode_success

    runner = SimRunner(
        spec(), tmp_path / "eval", n_episodes=1, task_ids=[0, 1], n_videos=0, keep_episodes=True
    )
    runner.run(ScriptedExpert())
    rec = EpisodeRecorder(tmp_path / "ds", "test/rollouts", 20, ["agentview", "wrist"], 64)
    for ep in runner.episodes:
        rec.add(ep, source="expert")
    root = rec.finalize()
    ds = LeRobotDataset("test/rollouts", root=root, video_backend="pyav")
    assert ds.num_episodes == 2 and ds.num_frames == sum(ep.steps for ep in runner.episodes)
    item = ds[0]
    assert item["observation.images.agentview"].shape == (3, 64, 64)
    assert item["observation.state"].shape == (8,) and item["action"].shape == (7,)
    np.testing.assert_allclose(item["action"].numpy(), runner.episodes[0].actions[0], atol=1e-6)
    assert {"q01", "q99", "mean", "std"} <= set(ds.meta.stats["action"])
    assert episode_success(root) == {0: runner.episodes[0].success, 1: runner.episodes[1].success}
    assert ds[0]["task"] == runner.episodes[0].instruction
