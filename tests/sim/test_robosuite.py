"""robosuite suites: configs and bad input (fast tier), then the env contract (``sim``)."""

from __future__ import annotations

import subprocess
import sys

import mujoco
import numpy as np
import pytest
from hydra.utils import instantiate

from vlaexp.config.compose import compose_config
from vlaexp.config.sim import PerturbationConfig
from vlaexp.errors import ConfigError
from vlaexp.sim.base import ACTION_DIM, STATE_DIM
from vlaexp.sim.robosuite import RobosuiteSuite
from vlaexp.sim.robosuite.env import RobosuiteEnv, quat_xyzw_to_axis_angle
from vlaexp.sim.robosuite.library import global_numpy_seed
from vlaexp.sim.robosuite.tasks import DEFAULT_MAX_STEPS, TASKS, Placement

OPTIONS = {"robosuite_lift": "Lift", "robosuite_stack": "Stack", "robosuite_can": "PickPlaceCan"}
RES = 128


def make(env_name: str = "Lift", **overrides) -> RobosuiteSuite:
    kwargs = dict(
        name=f"robosuite_{env_name}",
        max_steps=DEFAULT_MAX_STEPS[env_name],
        env_name=env_name,
        resolution=RES,
        cameras=["agentview", "wrist"],
    )
    kwargs.update(overrides)
    return RobosuiteSuite(**kwargs)


# ---------------------------------------------------------------------- configs, bad input


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_files_compose_and_instantiate(option):
    cfg = compose_config([f"task_suite={option}"])
    node = cfg.task_suite
    assert node.name == option and node.env_name == OPTIONS[option]
    assert node.max_steps == DEFAULT_MAX_STEPS[OPTIONS[option]]
    assert node._target_ == "vlaexp.sim.robosuite.RobosuiteSuite"
    suite = instantiate(node, cameras=["agentview", "wrist"], _convert_="object")
    assert isinstance(suite, RobosuiteSuite)
    assert suite.task_ids == [0] and suite.cameras == ("agentview", "wrist")
    assert suite.instruction(0) == TASKS[OPTIONS[option]].instruction
    assert isinstance(suite.perturbation, PerturbationConfig)
    assert suite.eval_seeds(0)[:2] == [1_000_000, 1_000_001]


def test_perturbation_overrides_reach_the_suite():
    cfg = compose_config(["task_suite=robosuite_stack", "task_suite.perturbation.freeze=true"])
    suite = instantiate(cfg.task_suite, cameras=["wrist"], _convert_="object")
    assert suite.perturbation.freeze is True and suite.cameras == ("wrist",)


def test_unknown_env_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="Lfit") as e:
        RobosuiteSuite(name="x", max_steps=10, env_name="Lfit")
    assert "Did you mean 'Lift'" in str(e.value)
    assert "Valid choices: Lift, PickPlaceCan, Stack" in str(e.value)


def test_unknown_camera_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="frontview") as e:
        make(cameras=["agentview", "frontview"])
    assert "Valid choices: agentview, wrist" in str(e.value)
    with pytest.raises(ConfigError, match="no camera selected"):
        make(cameras=[])


@pytest.mark.parametrize("bad", [1, -1, True])
def test_unknown_task_id_names_the_valid_one(bad):
    suite = make()
    for call in (suite.instruction, suite.make_env):
        with pytest.raises(ConfigError, match=r"Valid task ids: 0") as e:
            call(bad)
        assert repr(bad) in str(e.value)


def test_unsupported_perturbations_are_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"perturbation.distractors=2 is not supported"):
        make(perturbation={"distractors": 2})
    with pytest.raises(ConfigError, match="wrong_target is not possible in robosuite Lift"):
        make(perturbation=PerturbationConfig(wrong_target=True))
    with pytest.raises(ConfigError, match="Unknown perturbation field 'colour'"):
        make(perturbation={"colour": True})
    with pytest.raises(ConfigError, match=r"camera_jitter=-0\.1 must be >= 0"):
        make(perturbation={"camera_jitter": -0.1})
    # Everything the suite claims to honour is accepted.
    make("Stack", perturbation={"wrong_target": True, "object_colors": True, "lighting": 0.3})


def test_bad_numbers_are_refused():
    with pytest.raises(ConfigError, match="fps=30"):
        make(fps=30)
    with pytest.raises(ConfigError, match="max_steps=0"):
        make(max_steps=0)
    with pytest.raises(ConfigError, match="resolution=4"):
        make(resolution=4)


def test_importing_the_package_does_not_import_robosuite():
    code = "import sys, vlaexp.sim.robosuite; print('robosuite' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_global_numpy_seed_restores_the_callers_stream():
    np.random.seed(7)
    expected = np.random.rand(3)
    np.random.seed(7)
    with global_numpy_seed(123):
        inside = np.random.rand(3)
    assert np.array_equal(np.random.rand(3), expected)
    with global_numpy_seed(123):
        assert np.array_equal(np.random.rand(3), inside)


def test_axis_angle_follows_libero():
    # 180 degrees about x (the Panda pointing down): angle pi, not wrapped to -pi.
    assert np.allclose(quat_xyzw_to_axis_angle(np.array([1.0, 0, 0, 0])), [np.pi, 0, 0])
    assert np.allclose(quat_xyzw_to_axis_angle(np.array([0, 0, 0, 1.0])), 0)
    half = np.pi / 4  # 90 degrees about z
    assert np.allclose(
        quat_xyzw_to_axis_angle(np.array([0, 0, np.sin(half), np.cos(half)])), [0, 0, np.pi / 2]
    )


def test_placement_aim_stays_inside_the_region():
    region = Placement(centre=np.array([0.2, 0.4, 0.86]), half_extent=np.array([0.1, 0.12]))
    assert np.allclose(region.aim(np.array([-0.5, -0.1]), 0.05), [0.15, 0.33, 0.86])
    assert np.allclose(region.aim(np.array([0.21, 0.41]), 0.05), [0.21, 0.41, 0.86])
    # A margin wider than the region collapses onto its centre.
    assert np.allclose(region.aim(np.array([-0.5, -0.1]), 0.5), [0.2, 0.4, 0.86])


# ---------------------------------------------------------------------- env contract (sim)


@pytest.fixture(scope="module")
def lift() -> RobosuiteEnv:
    env = make().make_env(0)
    yield env
    env.close()


def _project(env: RobosuiteEnv, camera: str, point: np.ndarray) -> tuple[float, float]:
    """(row, col) where ``point`` float[3] appears in an upright image of ``camera``."""
    cam = env.model.camera(camera).id
    rel = env.data.cam_xmat[cam].reshape(3, 3).T @ (point - env.data.cam_xpos[cam])
    focal = (RES / 2) / np.tan(np.deg2rad(env.model.cam_fovy[cam]) / 2)
    # MuJoCo cameras look along their -z axis with +y up.
    return RES / 2 - focal * rel[1] / -rel[2], RES / 2 + focal * rel[0] / -rel[2]


def _red_centroid(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(int)
    mask = (rgb[..., 0] > 80) & (rgb[..., 0] > 2 * rgb[..., 1]) & (rgb[..., 0] > 2 * rgb[..., 2])
    assert mask.sum() >= 4, "the red cube is not in view"
    return np.argwhere(mask).mean(axis=0)


@pytest.mark.sim
def test_observation_contract(lift):
    obs = lift.reset(1_000_000)
    assert set(obs) == {"images", "state"} and list(obs["images"]) == ["agentview", "wrist"]
    for img in obs["images"].values():
        assert img.shape == (RES, RES, 3) and img.dtype == np.uint8
        assert img.std() > 10  # a scene, not a blank frame
    state = obs["state"]
    assert state.shape == (STATE_DIM,) and state.dtype == np.float32
    # eef xyz is the grip site above the table; the Panda starts pointing down (about 180
    # degrees about an horizontal axis); the two fingers mirror each other.
    assert np.allclose(state[:3], lift.grip_pos(), atol=1e-6)
    assert 0.9 < state[2] < 1.1
    assert abs(np.linalg.norm(state[3:6]) - np.pi) < 0.3
    assert 0.0 < state[6] < 0.041 and np.isclose(state[6], -state[7], atol=1e-3)
    result = lift.step(np.zeros(ACTION_DIM, dtype=np.float32))
    assert result.info == {"success": False, "step": 1, "task_id": 0, "seed": 1_000_000}
    assert (result.reward, result.terminated, result.truncated) == (0.0, False, False)


@pytest.mark.sim
def test_images_are_upright_and_cameras_differ(lift):
    lift.reset(1_000_001)
    # Off the image centres, toward the robot and to its left, so a flip could not pass.
    cube = lift.object_pos("cube") * [0, 0, 1] + [-0.1, 0.1, 0.0]
    lift.set_object_pos("cube", cube)
    images = lift.render()
    for cam, robosuite_cam in (("agentview", "agentview"), ("wrist", "robot0_eye_in_hand")):
        row, col = _project(lift, robosuite_cam, cube)
        found = _red_centroid(images[cam])
        # Upside-down images would put the cube at row RES - row.
        assert abs(found[0] - row) < 4 and abs(found[1] - col) < 4, (cam, found, row, col)
        assert abs(row - RES / 2) > 6  # off the middle row, so a flip could not pass
    diff = np.abs(images["agentview"].astype(int) - images["wrist"].astype(int))
    assert diff.mean() > 20


@pytest.mark.sim
def test_reset_is_deterministic_per_seed(lift):
    first = lift.reset(1_000_002)
    cube = lift.object_pos("cube")
    lift.step(np.array([0.5, -0.3, 0.2, 0, 0, 0.1, 1], dtype=np.float32))
    again = lift.reset(1_000_002)
    assert np.array_equal(first["state"], again["state"])
    assert np.array_equal(lift.object_pos("cube"), cube)
    for cam in first["images"]:
        assert np.array_equal(first["images"][cam], again["images"][cam])
    other = lift.reset(1_000_003)
    assert np.linalg.norm(lift.object_pos("cube")[:2] - cube[:2]) > 1e-3
    assert not np.array_equal(other["state"], first["state"])
    # A second env of the same suite lays out the same seed identically.
    with make().make_env(0, render=False) as twin:
        twin_obs = twin.reset(1_000_002)
        assert np.array_equal(twin_obs["state"], first["state"]) and twin_obs["images"] == {}


@pytest.mark.sim
def test_actions_are_clipped_and_validated(lift):
    wild = np.array([5.0, -4.0, 3.0, 2.0, -2.0, 9.0, 7.0])
    lift.reset(1_000_004)
    start = lift.grip_pos()
    for _ in range(3):
        clipped_run = lift.step(np.clip(wild, -1, 1)).obs["state"]
    lift.reset(1_000_004)
    for _ in range(3):
        wild_run = lift.step(wild).obs["state"]
    assert np.array_equal(clipped_run, wild_run)
    assert np.linalg.norm(lift.grip_pos() - start) > 0.03  # it did move, by the clipped amount
    with pytest.raises(ValueError, match="7 values"):
        lift.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        lift.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))


@pytest.mark.sim
def test_success_predicate_and_horizon(lift):
    lift.reset(1_000_005)
    cube = lift.object_pos("cube")
    assert not lift.is_success()
    lift.set_object_pos("cube", cube + np.array([0.0, 0.0, 0.15]))
    assert lift.is_success()
    result = lift.step(np.zeros(ACTION_DIM))  # the cube falls 1 cm in 50 ms: still lifted
    assert result.terminated and result.reward == 1.0 and result.info["success"]
    lift.set_object_pos("cube", cube + np.array([0.0, 0.0, 0.01]))  # a centimetre is not a lift
    assert not lift.is_success()

    with make(max_steps=3).make_env(0, render=False) as short:
        short.reset(1_000_005)
        truncated = [short.step(np.zeros(ACTION_DIM)).truncated for _ in range(3)]
        assert truncated == [False, False, True]


@pytest.mark.sim
def test_step_before_reset_and_double_close_are_handled():
    env = make().make_env(0, render=False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(ACTION_DIM))
    with pytest.raises(RuntimeError, match="reset"):
        env.failure_mode()
    env.close()
    env.close()


@pytest.mark.sim
@pytest.mark.parametrize("env_name", ["Stack", "PickPlaceCan"])
def test_other_tasks_render_and_reset(env_name):
    suite = make(env_name, cameras=["wrist", "agentview"])
    with suite.make_env(0) as env:
        obs = env.reset(suite.eval_seeds(0)[0])
        assert list(obs["images"]) == ["wrist", "agentview"]
        assert all(img.shape == (RES, RES, 3) for img in obs["images"].values())
        assert obs["state"].shape == (STATE_DIM,) and not env.is_success()
        assert env.instruction == TASKS[env_name].instruction
        # Objects have landed by the first observation: they no longer fall.
        heights = [env.object_pos(n)[2] for n in TASKS[env_name].scene_objects]
        env.step(np.zeros(ACTION_DIM))
        after = [env.object_pos(n)[2] for n in TASKS[env_name].scene_objects]
        assert np.allclose(heights, after, atol=1e-3)


@pytest.mark.sim
def test_hydra_built_suite_renders_at_its_resolution():
    cfg = compose_config(["task_suite=robosuite_lift"])
    suite = instantiate(cfg.task_suite, cameras=["agentview"], _convert_="object")
    with suite.make_env(0) as env:
        obs = env.reset(suite.eval_seeds(0)[0])
        assert obs["images"]["agentview"].shape == (128, 128, 3)
        assert env.max_steps == 200 and env.fps == 20


def test_mujoco_renderer_flags_are_off_in_our_renderer():
    from vlaexp.sim.robosuite.render import CameraRenderer

    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><camera name='c' pos='0 0 1'/><geom size='.1'/></worldbody></mujoco>"
    )
    renderer = CameraRenderer(model, mujoco.MjData(model), {"agentview": "c"}, 16)
    flags = renderer._renderer.scene.flags
    assert not flags[mujoco.mjtRndFlag.mjRND_SHADOW]
    assert not flags[mujoco.mjtRndFlag.mjRND_REFLECTION]
    assert renderer.render()["agentview"].shape == (16, 16, 3)
    renderer.close()
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render()
