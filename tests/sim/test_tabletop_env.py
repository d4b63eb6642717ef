"""TabletopEnv: observation/action contract, determinism, control rate, camera selection."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.errors import ConfigError
from vlaexp.sim.base import ACTION_DIM, STATE_DIM
from vlaexp.sim.tabletop.env import POS_SCALE, ROT_SCALE, TabletopEnv
from vlaexp.sim.tabletop.scene import FINGER_OPEN, HOME_TCP
from vlaexp.sim.tabletop.tasks import GOAL_TASKS, SPATIAL_TASKS, TARGET

RES = 32  # small images keep these tests fast; the contract does not depend on size


def make_env(cameras=("agentview", "wrist"), task=GOAL_TASKS[0], **kwargs) -> TabletopEnv:
    kwargs.setdefault("resolution", RES)
    kwargs.setdefault("max_steps", 50)
    return TabletopEnv(task, task_id=0, cameras=cameras, **kwargs)


@pytest.fixture(scope="module")
def env():
    e = make_env()
    yield e
    e.close()


def test_observation_shapes_dtypes_and_ranges(env):
    obs = env.reset(1)
    assert set(obs) == {"images", "state", "object_position"}
    position = obs["object_position"]  # the task's object, for monitors (not a policy input)
    assert position.shape == (3,) and position.dtype == np.float32
    np.testing.assert_allclose(position, env.object_pos(env.task.carried[0]), atol=1e-6)
    assert set(obs["images"]) == {"agentview", "wrist"}
    for img in obs["images"].values():
        assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a real picture, not a blank buffer
    state = obs["state"]
    assert state.shape == (STATE_DIM,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:3], HOME_TCP, atol=0.03)
    # Pointing down: a half turn about x, LIBERO's (pi, 0, 0)-like eef orientation.
    np.testing.assert_allclose(np.abs(state[3:6]), [np.pi, 0, 0], atol=0.05)
    np.testing.assert_allclose(state[6:], [FINGER_OPEN, -FINGER_OPEN], atol=2e-3)


@pytest.mark.parametrize(
    "cameras", [("agentview",), ("wrist",), ("agentview", "wrist"), ("wrist", "agentview")]
)
def test_camera_selection(cameras):
    with make_env(cameras=cameras) as e:
        obs = e.reset(3)
        assert tuple(obs["images"]) == cameras
        result = e.step(np.zeros(ACTION_DIM))
        assert tuple(result.obs["images"]) == cameras


def test_cameras_see_different_views(env):
    obs = env.reset(2)
    assert not np.array_equal(obs["images"]["agentview"], obs["images"]["wrist"])


def test_unknown_camera_lists_valid_ones():
    with pytest.raises(ConfigError, match="agentview, wrist"):
        make_env(cameras=("agentview", "eye_in_hand"))


def test_reset_is_deterministic_per_seed(env):
    first = env.reset(11)
    pos = {n: env.object_pos(n).copy() for n in env.object_names}
    again = env.reset(11)
    np.testing.assert_array_equal(first["state"], again["state"])
    for cam in first["images"]:
        np.testing.assert_array_equal(first["images"][cam], again["images"][cam])
    for n in env.object_names:
        np.testing.assert_array_equal(pos[n], env.object_pos(n))
    env.reset(12)
    moved = [np.linalg.norm(pos[n] - env.object_pos(n)) for n in env.object_names]
    assert min(moved) > 1e-3  # every object starts somewhere else


def test_rollout_is_deterministic(env):
    actions = np.random.default_rng(0).uniform(-1, 1, (15, ACTION_DIM))
    runs = []
    for _ in range(2):
        env.reset(5)
        runs.append([env.step(a).obs["state"] for a in actions])
    np.testing.assert_array_equal(np.array(runs[0]), np.array(runs[1]))


def test_control_at_20_hz(env):
    env.reset(0)
    t0 = env.data.time
    for k in range(1, 4):
        env.step(np.zeros(ACTION_DIM))
        assert env.data.time - t0 == pytest.approx(k / 20)


def test_other_control_rates_and_bad_fps():
    with make_env(fps=10) as e:
        e.reset(0)
        t0 = e.data.time
        e.step(np.zeros(ACTION_DIM))
        assert e.data.time - t0 == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="fps=7"):
        make_env(fps=7)


def test_translation_rotation_and_gripper_semantics(env):
    env.reset(0)
    start = env.tcp_pos().copy()
    for _ in range(4):
        env.step(np.array([0.5, 0, 0, 0, 0, 0, -1]))
    moved = env.tcp_pos() - start
    # 4 steps of 0.5 * 5 cm; the weld lags a little behind the target.
    assert moved[0] == pytest.approx(4 * 0.5 * POS_SCALE, rel=0.1)
    assert abs(moved[1]) < 2e-3 and abs(moved[2]) < 2e-3
    yaw0 = env.gripper_yaw()
    for _ in range(3):
        env.step(np.array([0, 0, 0.2, 0, 0, 0.2, -1]))  # rotate about +z (yaw) while rising
    assert env.gripper_yaw() - yaw0 == pytest.approx(3 * 0.2 * ROT_SCALE, rel=0.1)
    for _ in range(10):
        result = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    np.testing.assert_allclose(result.obs["state"][6:], [0, 0], atol=1e-3)  # closed on air
    for _ in range(10):
        result = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    np.testing.assert_allclose(result.obs["state"][6:], [FINGER_OPEN, -FINGER_OPEN], atol=2e-3)


def test_actions_are_clipped(env):
    big = np.array([5.0, -3.0, 2.0, 0.0, 0.0, 4.0, 9.0])
    env.reset(4)
    clipped_run = env.step(np.clip(big, -1, 1)).obs["state"]
    env.reset(4)
    big_run = env.step(big).obs["state"]
    np.testing.assert_array_equal(clipped_run, big_run)


def test_bad_actions_raise(env):
    env.reset(0)
    with pytest.raises(ValueError, match="7 values"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))


def test_step_before_reset_raises():
    with make_env(cameras=("wrist",)) as e, pytest.raises(RuntimeError, match="reset"):
        e.step(np.zeros(ACTION_DIM))


def test_workspace_keeps_the_gripper_above_the_table(env):
    env.reset(0)
    for _ in range(15):
        env.step(np.array([0, 0, -1.0, 0, 0, 0, -1]))
    assert env.tcp_pos()[2] > 0.005


def test_horizon_truncates_and_info_fields():
    with make_env(cameras=("agentview",), max_steps=3, task=SPATIAL_TASKS[0]) as e:
        e.reset(9)
        results = [e.step(np.zeros(ACTION_DIM)) for _ in range(3)]
    assert [r.truncated for r in results] == [False, False, True]
    for k, r in enumerate(results, start=1):
        assert r.info["step"] == k and r.info["success"] is False and r.reward == 0.0
        assert r.info["subgoals"] == [False] and r.info["seed"] == 9
        assert not r.terminated


def test_grasp_xy_error_is_the_tcp_to_object_distance_at_the_first_close():
    from vlaexp.sim.tabletop.expert import TabletopExpert

    with make_env(render=False, task=SPATIAL_TASKS[0], max_steps=120) as e:
        e.reset(3)
        move = np.zeros(ACTION_DIM)
        move[6] = -1.0  # open: no grasp yet
        assert e.step(move).info["grasp_xy_error"] is None
        where = e.tcp_pos()[:2].copy()
        cube = np.linalg.norm(e.object_pos(TARGET)[:2] - where)  # the task's one carried object
        close = move.copy()
        close[:3], close[6] = (0.5, 0.0, 0.0), 1.0  # closes here, then moves on
        first = e.step(close).info["grasp_xy_error"]
        assert first == pytest.approx(cube, abs=1e-6) and first > 0.05
        e.step(move)
        assert e.step(close).info["grasp_xy_error"] == first  # the first close is what counts
        # the scripted expert closes centred on the cube
        obs = e.reset(3)
        expert = TabletopExpert(e)
        expert.reset()
        while True:
            result = e.step(expert.act(obs))
            obs = result.obs
            if result.terminated or result.truncated:
                break
        assert result.terminated and result.info["grasp_xy_error"] < 0.005
