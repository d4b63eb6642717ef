"""LIBERO through hf-libero: everything up to the asset boundary offline; scenes with assets.

hf-libero's wheel ships the task files (BDDL, init states) but not the meshes and textures.
Offline tests use ``asset_layout``, a folder with the assets' top-level folders and no
meshes: it passes the construction check, so suites, tasks and seeds can be tested, but no
scene can be built from it. Tests marked ``sim`` build real scenes; they find the assets
where hf-libero keeps them or in ``$VLAEXP_LIBERO_ASSETS``, and skip when there are none.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from vlaexp.config.compose import compose_config
from vlaexp.config.sim import PerturbationConfig
from vlaexp.errors import ConfigError, MissingPathError
from vlaexp.sim.base import ACTION_DIM, STATE_DIM
from vlaexp.sim.factory import make_task_suite
from vlaexp.sim.libero import (
    ASSET_FOLDERS,
    HUB_ASSETS_DIR,
    SAMPLED_SEED_START,
    SUITE_MAX_STEPS,
    LiberoEnv,
    LiberoSuite,
    libero_observation,
    libero_package_dir,
    libero_state,
    libero_tasks,
    load_init_states,
    missing_asset_folders,
    quat_to_axis_angle,
    resolve_assets,
    rotate_180,
    write_libero_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES = list(SUITE_MAX_STEPS)
# The first and last instruction of each suite, in hf-libero's benchmark order.
INSTRUCTIONS = {
    "libero_spatial": (
        "pick up the black bowl between the plate and the ramekin and place it on the plate",
        "pick up the black bowl on the wooden cabinet and place it on the plate",
    ),
    "libero_object": (
        "pick up the alphabet soup and place it in the basket",
        "pick up the orange juice and place it in the basket",
    ),
    "libero_goal": ("open the middle drawer of the cabinet", "put the wine bottle on the rack"),
    "libero_10": (
        "put both the alphabet soup and the tomato sauce in the basket",
        "put the yellow and white mug in the microwave and close it",
    ),
    "libero_90": (
        "close the top drawer of the cabinet",
        "pick up the book on the right and place it under the cabinet shelf",
    ),
}


@pytest.fixture(scope="module")
def asset_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The assets' top-level folders without meshes: passes the check, builds no scene."""
    root = tmp_path_factory.mktemp("libero_assets")
    for name in ASSET_FOLDERS:
        (root / name).mkdir()
    return root


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("libero_config")


@pytest.fixture(scope="module")
def spatial(asset_layout: Path, config_dir: Path) -> LiberoSuite:
    return LiberoSuite(
        name="libero_spatial",
        suite="libero_spatial",
        assets_dir=asset_layout,
        config_dir=config_dir,
        n_eval_seeds=5,
    )


# --- observations --------------------------------------------------------------------


def test_rotate_180_flips_both_axes() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = rotate_180(image)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.rot90(image, 2))
    np.testing.assert_array_equal(out[-1, -1], image[0, 0])
    np.testing.assert_array_equal(out[0, 0], image[-1, -1])


def test_quat_to_axis_angle_known_values() -> None:
    s = np.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 0, 1]), np.zeros(3))
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, s, s]), [0, 0, np.pi / 2])
    np.testing.assert_allclose(quat_to_axis_angle([1, 0, 0, 0]), [np.pi, 0, 0])
    # openpi keeps w < 0 as is: 270 degrees about z, not -90.
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, s, -s]), [0, 0, 1.5 * np.pi])
    # w slightly above 1 from float noise is clipped, not NaN.
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 0, 1 + 1e-9]), np.zeros(3))


def test_quat_to_axis_angle_matches_scipy_rotvec() -> None:
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(100, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[quats[:, 3] < 0] *= -1  # scipy's rotvec takes the angle <= pi, i.e. w >= 0
    for q in quats:
        before = q.copy()
        np.testing.assert_allclose(
            quat_to_axis_angle(q), Rotation.from_quat(q).as_rotvec(), atol=1e-10
        )
        np.testing.assert_array_equal(q, before)  # the input is not modified


def test_state_and_observation_from_raw_obs() -> None:
    s = np.sqrt(0.5)
    agent = np.zeros((6, 6, 3), np.uint8)
    agent[0, 0] = 255
    wrist = np.full((6, 6, 3), 7, np.uint8)
    raw = {
        "robot0_eef_pos": np.array([0.1, -0.2, 1.0]),
        "robot0_eef_quat": np.array([0.0, 0.0, s, s]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
        "agentview_image": agent,
        "robot0_eye_in_hand_image": wrist,
    }
    state = libero_state(raw)
    assert state.dtype == np.float32 and state.shape == (STATE_DIM,)
    np.testing.assert_allclose(state, [0.1, -0.2, 1.0, 0, 0, np.pi / 2, 0.04, -0.04], rtol=1e-6)
    obs = libero_observation(raw, ["agentview", "wrist"])
    assert list(obs["images"]) == ["agentview", "wrist"]
    assert obs["images"]["agentview"][-1, -1, 0] == 255 and obs["images"]["agentview"][0, 0, 0] == 0
    np.testing.assert_array_equal(obs["images"]["wrist"], wrist)
    np.testing.assert_array_equal(obs["state"], state)
    assert list(libero_observation(raw, ["wrist"])["images"]) == ["wrist"]


# --- config file and import ------------------------------------------------------------


def test_config_file_points_libero_at_its_task_files(tmp_path: Path, asset_layout: Path) -> None:
    path = write_libero_config(tmp_path / "cfg", asset_layout)
    assert path == (tmp_path / "cfg" / "config.yaml").resolve()
    paths = yaml.safe_load(path.read_text())
    assert set(paths) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    assert Path(paths["benchmark_root"]) == libero_package_dir()
    for suite in SUITES:
        assert (Path(paths["bddl_files"]) / suite).is_dir()
        assert (Path(paths["init_states"]) / suite).is_dir()
    assert Path(paths["assets"]) == asset_layout.resolve()
    write_libero_config(tmp_path / "cfg", tmp_path / "other")
    assert yaml.safe_load(path.read_text())["assets"] == str((tmp_path / "other").resolve())


def test_import_never_prompts_and_uses_the_assets_dir(tmp_path: Path, asset_layout: Path) -> None:
    """hf-libero calls input() on first import without a config; stdin closed must not fail."""
    code = (
        "import sys\n"
        "import vlaexp.sim.libero as m\n"
        "assert 'libero' not in sys.modules, 'importing vlaexp must not import hf-libero'\n"
        f"lib = m.import_libero({str(tmp_path / 'cfg')!r}, {str(asset_layout)!r})\n"
        "print('bddl', lib.get_libero_path('bddl_files'))\n"
        "print('assets', lib.get_assets_path())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LIBERO_CONFIG_PATH"}
    env.update(HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")  # no ~/.libero to fall back on
    proc = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Do you want" not in proc.stdout
    assert f"bddl {libero_package_dir() / 'bddl_files'}" in proc.stdout
    assert f"assets {asset_layout.resolve()}" in proc.stdout
    assert (tmp_path / "cfg" / "config.yaml").is_file()
    assert not (tmp_path / "home" / ".libero").exists()


# --- assets ----------------------------------------------------------------------------


def test_missing_assets_dir_names_the_setting(tmp_path: Path, config_dir: Path) -> None:
    missing = tmp_path / "no_assets"
    with pytest.raises(MissingPathError) as err:
        LiberoSuite(
            name="libero_spatial", suite="libero_spatial", assets_dir=missing, config_dir=config_dir
        )
    assert err.value.setting == "task_suite.assets_dir"
    assert err.value.path == missing
    msg = str(err.value)
    assert str(missing) in msg and "task_suite.assets_dir" in msg and "hub" in msg


def test_incomplete_assets_dir_lists_what_is_missing(tmp_path: Path, config_dir: Path) -> None:
    partial = tmp_path / "partial"
    (partial / "scenes").mkdir(parents=True)
    assert "scenes" not in missing_asset_folders(partial)
    with pytest.raises(MissingPathError, match="It lacks articulated_objects") as err:
        resolve_assets(partial, config_dir)
    assert "textures" in str(err.value) and err.value.setting == "task_suite.assets_dir"


def test_default_assets_offline_fail_without_downloading(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not missing_asset_folders(HUB_ASSETS_DIR) or not missing_asset_folders(
        libero_package_dir() / "assets"
    ):
        pytest.skip("hf-libero's assets are installed here")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingPathError, match="HF_HUB_OFFLINE") as err:
        resolve_assets(None, config_dir)
    assert err.value.path == HUB_ASSETS_DIR and err.value.setting == "task_suite.assets_dir"


# --- tasks, init states, seeds -------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_tasks_instructions_and_init_states(
    suite: str, config_dir: Path, asset_layout: Path
) -> None:
    tasks = libero_tasks(suite, config_dir, asset_layout)
    assert len(tasks) == (90 if suite == "libero_90" else 10)
    assert (tasks[0].instruction, tasks[-1].instruction) == INSTRUCTIONS[suite]
    assert len({t.name for t in tasks}) == len(
        tasks
    )  # libero_90 repeats instructions across scenes
    for task in tasks:
        assert task.bddl_file.is_file() and task.init_states_file.is_file()
    states = load_init_states(tasks[0])
    assert states.dtype == np.float64 and states.ndim == 2 and states.shape[0] == 50


def test_suite_tasks_and_eval_seed_mapping(spatial: LiberoSuite) -> None:
    assert spatial.task_ids == list(range(10))
    assert spatial.max_steps == 220 and spatial.fps == 20 and spatial.resolution == 256
    assert spatial.cameras == ("agentview", "wrist")
    assert spatial.instruction(0) == INSTRUCTIONS["libero_spatial"][0]
    assert all(spatial.n_init_states(t) == 50 for t in spatial.task_ids)
    # Eval episode i starts from init state i; training seeds never name an init state.
    assert spatial.eval_seeds(3) == [0, 1, 2, 3, 4]
    train = spatial.train_seeds(3, 4, offset=10)
    assert train == list(range(SAMPLED_SEED_START + 10, SAMPLED_SEED_START + 14))
    assert min(train) >= spatial.n_init_states(3)


def test_more_eval_seeds_than_init_states_is_an_error(asset_layout: Path, config_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"n_eval_seeds=51.*50 fixed init states"):
        LiberoSuite(
            name="libero_goal",
            suite="libero_goal",
            n_eval_seeds=51,
            assets_dir=asset_layout,
            config_dir=config_dir,
        )


def test_max_steps_default_to_the_suite(asset_layout: Path, config_dir: Path) -> None:
    assert SUITE_MAX_STEPS == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
    suite = LiberoSuite(
        name="l10", suite="libero_10", assets_dir=asset_layout, config_dir=config_dir
    )
    assert suite.max_steps == 520 and suite.num_steps_wait == 10


# --- bad input -------------------------------------------------------------------------------


def test_unknown_suite_lists_the_suites(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'libero_spatial'") as err:
        LiberoSuite(name="x", suite="libero_spatal", config_dir=config_dir)
    for suite in SUITES:
        assert suite in str(err.value)
    with pytest.raises(ConfigError, match="libero_goal"):
        libero_tasks("libero_100", config_dir, config_dir)


def test_unknown_task_id_names_the_range(spatial: LiberoSuite) -> None:
    for bad in (10, -1):
        with pytest.raises(ConfigError, match=r"0\.\.9"):
            spatial.instruction(bad)
    with pytest.raises(ConfigError, match=r"task id 12 .*0\.\.9"):
        spatial.make_env(12)
    with pytest.raises(ConfigError):
        spatial.eval_seeds(10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cameras": ["agentview", "top"]}, "Unknown LIBERO camera 'top'.*agentview, wrist"),
        ({"cameras": []}, "cameras is empty; choose from agentview, wrist"),
        (
            {"perturbation": PerturbationConfig(object_colors=True)},
            r"LIBERO scenes are fixed: task_suite\.perturbation\.object_colors=True",
        ),
        ({"perturbation": {"lighting": 0.2}}, r"task_suite\.perturbation\.lighting=0\.2"),
        ({"perturbation": {"lightning": 0.2}}, "Did you mean 'lighting'"),
        ({"fps": 10}, "fps=10.*20 Hz"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"n_eval_seeds": 0}, "n_eval_seeds=0"),
        ({"resolution": 0}, "resolution=0"),
        ({"num_steps_wait": -1}, "num_steps_wait=-1"),
    ],
)
def test_bad_settings_are_explained(
    kwargs: dict, message: str, asset_layout: Path, config_dir: Path
) -> None:
    base = {"name": "s", "suite": "libero_spatial", "assets_dir": asset_layout}
    with pytest.raises(ConfigError, match=message):
        LiberoSuite(**{**base, **kwargs}, config_dir=config_dir)


# --- Hydra ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_option_file_builds_the_suite(
    suite: str, tmp_path: Path, asset_layout: Path, config_dir: Path
) -> None:
    overrides = [f"task_suite={suite}", f"task_suite.config_dir={config_dir}"]
    cfg = compose_config([*overrides, f"task_suite.assets_dir={tmp_path / 'none'}"]).task_suite
    assert (cfg.name, cfg.suite, cfg.max_steps) == (suite, suite, SUITE_MAX_STEPS[suite])
    assert (cfg.resolution, cfg.num_steps_wait, cfg.fps) == (256, 10, 20)
    with pytest.raises(MissingPathError, match=r"task_suite\.assets_dir"):
        make_task_suite(cfg, ["agentview", "wrist"])
    cfg = compose_config([*overrides, f"task_suite.assets_dir={asset_layout}"]).task_suite
    built = make_task_suite(cfg, ["wrist"])
    assert isinstance(built, LiberoSuite)
    assert (built.name, built.max_steps, built.cameras) == (
        suite,
        SUITE_MAX_STEPS[suite],
        ("wrist",),
    )
    assert built.instruction(0) == INSTRUCTIONS[suite][0]


def test_option_file_rejects_perturbations(asset_layout: Path, config_dir: Path) -> None:
    cfg = compose_config(
        [
            "task_suite=libero_goal",
            f"task_suite.assets_dir={asset_layout}",
            f"task_suite.config_dir={config_dir}",
            "task_suite.perturbation.distractors=2",
        ]
    ).task_suite
    with pytest.raises(ConfigError, match=r"task_suite\.perturbation\.distractors=2"):
        make_task_suite(cfg, ["agentview"])


# --- real scenes (need the assets) -------------------------------------------------------


@pytest.fixture(scope="module")
def real_suite(config_dir: Path) -> LiberoSuite:
    """libero_spatial with real assets (hf-libero's or ``$VLAEXP_LIBERO_ASSETS``), 64 px."""
    assets = os.environ.get("VLAEXP_LIBERO_ASSETS")
    try:
        return LiberoSuite(
            name="libero_spatial",
            suite="libero_spatial",
            max_steps=3,
            resolution=64,
            n_eval_seeds=2,
            assets_dir=assets,
            config_dir=config_dir,
        )
    except MissingPathError as e:
        pytest.skip(
            f"LIBERO assets not found at {e.path}: set task_suite.assets_dir "
            "(here: $VLAEXP_LIBERO_ASSETS)"
        )


@pytest.mark.sim
def test_real_scene_resets_to_init_states_and_steps(real_suite: LiberoSuite) -> None:
    with real_suite.make_env(0) as env:
        assert isinstance(env, LiberoEnv) and env.instruction == real_suite.instruction(0)
        obs = env.reset(0)
        assert set(obs["images"]) == {"agentview", "wrist"}
        for image in obs["images"].values():
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
        assert np.all(np.isfinite(obs["state"]))
        np.testing.assert_allclose(env.reset(0)["state"], obs["state"], atol=1e-6)
        assert not env.is_success()
        env.reset(0)
        action = np.zeros(ACTION_DIM, np.float32)
        action[-1] = -1.0
        result = env.step(action)
        assert result.info == {"success": False, "step": 1}
        assert not result.terminated and not result.truncated and result.reward == 0.0
        env.step(np.full(ACTION_DIM, 5.0, np.float32))  # clipped to [-1, 1]
        result = env.step(action)
        assert result.truncated and result.info["step"] == 3
        sampled = env.reset(real_suite.train_seeds(0, 1)[0])
        assert sampled["state"].shape == (STATE_DIM,)
        with pytest.raises(ValueError, match="7 values"):
            env.step(np.zeros(3))


@pytest.mark.sim
def test_real_scene_renders_only_the_chosen_camera(
    real_suite: LiberoSuite, config_dir: Path
) -> None:
    wrist_only = LiberoSuite(
        name="libero_spatial",
        suite="libero_spatial",
        resolution=32,
        assets_dir=real_suite.assets_dir,
        config_dir=config_dir,
        cameras=["wrist"],
    )
    with wrist_only.make_env(1) as env:
        obs = env.reset(0)
        assert list(obs["images"]) == ["wrist"] and obs["images"]["wrist"].shape == (32, 32, 3)
