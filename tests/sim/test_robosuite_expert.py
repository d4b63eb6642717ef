"""The robosuite scripted expert, its faults, and the failure modes the env reports."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.config.sim import PerturbationConfig
from vlaexp.sim.base import ACTION_DIM
from vlaexp.sim.robosuite import RobosuiteSuite
from vlaexp.sim.robosuite.env import RobosuiteEnv
from vlaexp.sim.robosuite.evaluate_experts import run_episode
from vlaexp.sim.robosuite.expert import RobosuiteExpert
from vlaexp.sim.robosuite.tasks import DEFAULT_MAX_STEPS, in_bin

pytestmark = pytest.mark.sim


def expert_env(
    env_name: str, **perturbation
) -> tuple[RobosuiteSuite, RobosuiteEnv, RobosuiteExpert]:
    suite = RobosuiteSuite(
        name=f"robosuite_{env_name}",
        max_steps=DEFAULT_MAX_STEPS[env_name],
        env_name=env_name,
        perturbation=PerturbationConfig(**perturbation),
    )
    env = suite.make_env(0, render=False)
    return suite, env, suite.make_expert(env)


@pytest.fixture(scope="module")
def lift():
    suite, env, expert = expert_env("Lift")
    yield suite, env, expert
    env.close()


def test_lift_expert_succeeds_quickly(lift):
    suite, env, expert = lift
    for seed in suite.eval_seeds(0)[:3]:
        run = run_episode(env, expert, seed)
        assert run["success"] and run["steps"] < 80, run
        assert run["fault"] == "none" and run["failure_mode"] is None


@pytest.mark.slow
def test_lift_expert_succeeds_on_at_least_90_percent_of_the_eval_seeds(lift):
    suite, env, expert = lift
    runs = [run_episode(env, expert, seed) for seed in suite.eval_seeds(0)]
    assert len(runs) == 50
    assert sum(r["success"] for r in runs) >= 45, [r for r in runs if not r["success"]]


@pytest.mark.parametrize("env_name", ["Stack", "PickPlaceCan"])
def test_pick_and_place_experts_succeed(env_name):
    suite, env, expert = expert_env(env_name)
    with env:
        for seed in suite.eval_seeds(0)[:2]:
            run = run_episode(env, expert, seed)
            assert run["success"], run
            assert run["steps"] < suite.max_steps / 2


def test_expert_episodes_are_reproducible_even_with_action_noise():
    suite, env, expert = expert_env("Lift", action_noise=0.2)
    seed = suite.eval_seeds(0)[1]
    with env:
        runs = []
        for _ in range(2):
            obs = env.reset(seed)
            expert.reset()
            actions = []
            for _ in range(30):
                actions.append(expert.act(obs))
                obs = env.step(actions[-1]).obs
            runs.append(np.stack(actions))
    assert np.array_equal(runs[0], runs[1])
    assert runs[0].dtype == np.float32 and runs[0].shape == (30, ACTION_DIM)
    assert np.all(np.abs(runs[0]) <= 1.0)


def test_large_action_noise_makes_the_expert_fail():
    suite, env, expert = expert_env("Lift", action_noise=1.0)
    with env:
        runs = [run_episode(env, expert, seed) for seed in suite.eval_seeds(0)[:3]]
    assert not any(r["success"] for r in runs)
    assert {r["failure_mode"] for r in runs} == {"never_grasped"}
    assert all(r["action_noise"] == 1.0 for r in runs)


def test_early_release_drops_the_cube():
    suite, env, expert = expert_env("Lift", early_release=True)
    with env:
        for seed in suite.eval_seeds(0)[:2]:
            run = run_episode(env, expert, seed)
            assert not run["success"] and run["failure_mode"] == "dropped", run
            assert run["fault"] == "early_release" and 0 < run["fault_step"] < 80
            assert not env.is_grasping("cube")


def test_early_release_while_carrying_drops_the_stacking_cube():
    suite, env, expert = expert_env("Stack", early_release=True)
    with env:
        run = run_episode(env, expert, suite.eval_seeds(0)[0])
    assert not run["success"] and run["failure_mode"] == "dropped", run


def test_freeze_stops_the_expert():
    suite, env, expert = expert_env("Lift", freeze=True)
    with env:
        run = run_episode(env, expert, suite.eval_seeds(0)[0])
        assert not run["success"] and run["steps"] == suite.max_steps
        assert run["fault"] == "freeze" and run["fault_step"] is not None
        assert run["failure_mode"] in ("never_grasped", "timeout")
        # Frozen means no motion command at all.
        assert np.array_equal(expert.act({}), np.zeros(ACTION_DIM, dtype=np.float32))


def test_wrong_target_moves_the_green_cube_instead():
    suite, env, expert = expert_env("Stack", wrong_target=True)
    with env:
        obs = env.reset(suite.eval_seeds(0)[0])
        expert.reset()
        green_start, green_top = env.object_pos("cubeB")[2], 0.0
        result = None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(expert.act(obs))
            obs = result.obs
            green_top = max(green_top, env.object_pos("cubeB")[2])
        assert not result.terminated and expert.fault == "wrong_target"
        assert env.failure_mode() == "never_grasped"  # the red cube never left the table
        assert green_top > green_start + 0.05  # the green one was carried


def test_wrong_target_puts_the_can_in_the_milk_bin():
    suite, env, expert = expert_env("PickPlaceCan", wrong_target=True)
    with env:
        run = run_episode(env, expert, suite.eval_seeds(0)[0])
        assert not run["success"] and run["failure_mode"] == "missed_goal", run
        milk_bin = env.placement(in_bin(0))
        offset = np.abs(env.object_pos("Can")[:2] - milk_bin.centre[:2])
        assert np.all(offset <= milk_bin.half_extent)


def test_failure_mode_of_constructed_episodes(lift):
    suite, env, expert = lift
    seed = suite.eval_seeds(0)[4]
    # Nothing done: never grasped.
    env.reset(seed)
    for _ in range(5):
        env.step(np.zeros(ACTION_DIM))
    assert env.failure_mode() == "never_grasped"
    # Still holding the cube a little above the table when time runs out: timeout.
    obs = env.reset(seed)
    expert.reset()
    start = env.object_pos("cube")[2]
    while not (expert.phase == "lift" and env.object_pos("cube")[2] > start + 0.007):
        obs = env.step(expert.act(obs)).obs
        assert env.step_count < 100
    for _ in range(5):
        env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert env.is_grasping("cube") and not env.is_success()
    assert env.failure_mode() == "timeout"
    # Opening the fingers then: dropped.
    for _ in range(8):
        env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert not env.is_grasping("cube")
    assert env.failure_mode() == "dropped"
    # A success has no failure mode.
    env.set_object_pos("cube", env.object_pos("cube") + np.array([0.0, 0.0, 0.2]))
    with pytest.raises(RuntimeError, match="succeeded"):
        env.failure_mode()


def first_actions(env, expert, seed: int, expert_first: bool, n: int = 5) -> np.ndarray:
    if expert_first:
        expert.reset()
    obs = env.reset(seed)
    if not expert_first:
        expert.reset()
    actions = []
    for _ in range(n):
        actions.append(expert.act(obs))
        obs = env.step(actions[-1]).obs
    return np.stack(actions)


def test_expert_plans_each_episode_whatever_the_reset_order(lift):
    suite, _, _ = lift
    env = suite.make_env(0, render=False)
    expert = suite.make_expert(env)
    with pytest.raises(RuntimeError, match="reset the env"):
        expert.act({})
    seeds = suite.eval_seeds(0)
    canonical = first_actions(env, expert, seeds[0], expert_first=False)
    assert np.array_equal(first_actions(env, expert, seeds[0], expert_first=True), canonical)
    # An env reset the expert was not told about still starts a fresh plan.
    other = first_actions(env, expert, seeds[1], expert_first=False)
    assert np.array_equal(expert.act(env.reset(seeds[1])), other[0])
    assert not np.array_equal(other, canonical)
    env.close()


def test_make_expert_needs_a_robosuite_env(lift):
    from vlaexp.errors import ConfigError
    from vlaexp.sim.base import SimEnv

    class Other(SimEnv):
        def reset(self, seed):
            return {}

        def step(self, action):
            raise AssertionError

        def is_success(self):
            return False

        def close(self):
            pass

    with pytest.raises(ConfigError, match="needs a RobosuiteEnv, got Other"):
        lift[0].make_expert(Other())


def test_evaluate_experts_cli_writes_the_table(tmp_path):
    import json

    from vlaexp.sim.robosuite import evaluate_experts

    argv = ["--envs", "Lift", "--episodes", "2", "--faults", "early_release"]
    argv += ["--fault-episodes", "1", "--workers", "1", "--out", str(tmp_path)]
    assert evaluate_experts.main(argv) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| Lift | lift the red cube | 2/2 (100%) |" in readme
    assert "| Lift | early_release | 1 | 0/1 | dropped: 1 |" in readme
    assert "python -m vlaexp.sim.robosuite.evaluate_experts --envs Lift" in readme
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["fault"], r["successes"]) for r in results] == [("none", 2), ("early_release", 0)]


def test_fault_prob_mixes_clean_and_faulted_episodes():
    suite, env, expert = expert_env("Lift", early_release=True, fault_prob=0.5)
    runs = [run_episode(env, expert, seed) for seed in suite.eval_seeds(0)[:8]]
    env.close()
    faulted = [r for r in runs if r["fault"] == "early_release"]
    clean = [r for r in runs if r["fault"] == "none"]
    assert faulted and clean
    assert all(r["success"] for r in clean) and not any(r["success"] for r in faulted)
