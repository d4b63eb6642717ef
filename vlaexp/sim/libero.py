"""LIBERO through hf-libero: ``LiberoSuite`` and its per-task ``LiberoEnv``.

Built by Hydra from ``conf/task_suite/libero_*.yaml`` (``LiberoSuiteConfig`` plus the
``cameras`` of the chosen camera group)::

    LiberoSuite(name="libero_spatial", max_steps=220, fps=20, resolution=256,
                n_eval_seeds=50, perturbation=PerturbationConfig(), suite="libero_spatial",
                assets_dir=None, num_steps_wait=10, cameras=["agentview", "wrist"])

Evaluation follows LIBERO, openpi and LeRobot: episode ``i`` of a task starts from the
task's fixed init state ``i`` (``set_init_state``), then ``num_steps_wait`` no-op steps
let the objects settle before the first observation. Seeds map to layouts as follows:

* ``0 <= seed < n_init_states`` (50 for every shipped task): LIBERO's fixed init state
  number ``seed``. :meth:`LiberoSuite.eval_seeds` returns ``0..n_eval_seeds-1``.
* any other seed ``< 2**32``: a layout drawn by LIBERO's own placement samplers after
  seeding them with ``seed`` (hf-libero seeds NumPy's global RNG).
  :meth:`LiberoSuite.train_seeds` starts at ``SAMPLED_SEED_START``, far from the fixed states.

hf-libero asks questions on ``input()`` at its first import unless
``$LIBERO_CONFIG_PATH/config.yaml`` exists, so :func:`import_libero` writes that file in
``config_dir`` and sets the variable before the first ``import libero``. Its meshes and
textures (``assets``) are not in the wheel: they come from ``assets_dir`` or from the
Hugging Face hub on first use, and a suite without them fails at construction.

The library is imported lazily, inside functions, so importing vlaexp stays light. (With
absolute imports, ``import libero`` here is the library, not this module.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import yaml

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError, MissingPathError, unknown_choice
from vlaexp.sim.base import ACTION_DIM, CAMERA_NAMES, SimEnv, StepResult, TaskSuite

# openpi's horizons (the longest training demonstration of each suite plus a margin).
SUITE_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
# Our camera names -> the robosuite cameras LIBERO renders (observation key = name + "_image").
ROBOSUITE_CAMERAS: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
# LIBERO's controller and its demonstrations run at 20 Hz.
LIBERO_FPS = 20
# The no-op LeRobot and openpi send while objects settle: no motion, gripper open.
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
# First seed of the sampled (non-eval) layouts; anything below it up to the number of init
# states names a fixed init state.
SAMPLED_SEED_START = 1_000_000
_MAX_SEED = 2**32  # NumPy's legacy seeding takes seeds in [0, 2**32)
# The top-level folders of hf-libero's assets (lerobot/libero-assets on the hub): meshes of
# each object family, the scene XMLs and the floor/wall textures they reference.
ASSET_FOLDERS = (
    "articulated_objects",
    "scenes",
    "stable_hope_objects",
    "stable_scanned_objects",
    "textures",
    "turbosquid_objects",
)
# Where hf-libero's hub download puts the assets when its package has none.
HUB_ASSETS_DIR = Path("~/.cache/libero/assets").expanduser()
DEFAULT_CONFIG_DIR = Path("~/.cache/vlaexp/libero").expanduser()
_ASSETS_SETTING = "task_suite.assets_dir"


# --- observations ----------------------------------------------------------------------


def rotate_180(image: np.ndarray) -> np.ndarray:
    """``uint8[H, W, 3]`` -> the same image turned 180 degrees (``img[::-1, ::-1]``).

    robosuite renders upside down (OpenGL's origin is bottom-left); LeRobot's and openpi's
    LIBERO data and policies see both axes flipped, so we do too.
    """
    return np.ascontiguousarray(image[::-1, ::-1])


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite quaternion ``[4]`` (x, y, z, w) -> axis-angle ``float64[3]``.

    The conversion openpi applies to LIBERO's ``robot0_eef_quat``: ``axis * 2 acos(w)``,
    so a quaternion with ``w < 0`` gives an angle above pi (it is not flipped to ``-q``).
    """
    q = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half == 0.0:  # no rotation: the axis is undefined, the angle zero
        return np.zeros(3)
    return q[:3] * (2.0 * np.arccos(w) / sin_half)


def libero_state(raw_obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """LIBERO's raw observation -> ``float32[8]``: eef xyz, eef axis-angle, finger qpos (2)."""
    return np.concatenate(
        [
            np.asarray(raw_obs["robot0_eef_pos"], dtype=np.float64),
            quat_to_axis_angle(raw_obs["robot0_eef_quat"]),
            np.asarray(raw_obs["robot0_gripper_qpos"], dtype=np.float64),
        ]
    ).astype(np.float32)


def libero_observation(raw_obs: Mapping[str, np.ndarray], cameras: Sequence[str]) -> dict[str, Any]:
    """``{"images": {cam: uint8[H, W, 3]}, "state": float32[8]}`` from LIBERO's raw obs."""
    images = {cam: rotate_180(raw_obs[f"{ROBOSUITE_CAMERAS[cam]}_image"]) for cam in cameras}
    return {"images": images, "state": libero_state(raw_obs)}


# --- hf-libero's config file, import and assets ---------------------------------------


def libero_package_dir() -> Path:
    """The installed ``libero/libero`` folder, found without importing it (no prompt)."""
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("hf-libero is not installed: pip install hf-libero==0.1.4")
    return Path(next(iter(spec.submodule_search_locations)))


def libero_paths(config_dir: Path, assets: Path) -> dict[str, str]:
    """The paths of LIBERO's ``config.yaml``: task files from the installed package."""
    root = libero_package_dir()
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str(config_dir / "datasets"),  # LIBERO's demonstrations; we never fetch them
        "assets": str(assets),
    }


def write_libero_config(config_dir: str | Path, assets: str | Path) -> Path:
    """Write ``config_dir/config.yaml`` (see :func:`libero_paths`); return its path.

    The file is replaced atomically and only when its content changes, so processes that
    build suites at the same time never read half a file.
    """
    config_dir = Path(config_dir).expanduser().resolve()
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.yaml"
    text = yaml.safe_dump(libero_paths(config_dir, Path(assets).expanduser().resolve()))
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".config.yaml.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def import_libero(config_dir: str | Path, assets: str | Path) -> ModuleType:
    """``libero.libero``, imported with our config file and using ``assets`` for meshes.

    Sets ``LIBERO_CONFIG_PATH`` to ``config_dir`` for this process (and its children) before
    the first import, which is when hf-libero reads it; we take task file paths from our
    own :func:`libero_paths`, so an earlier import with another config does no harm. Call
    it again in each process that builds scenes: the assets folder is module state of the
    library.
    """
    os.environ["LIBERO_CONFIG_PATH"] = str(write_libero_config(config_dir, assets).parent)
    import libero.libero as libero_lib

    # get_assets_path() returns this cached folder when it exists, before looking in its
    # package or downloading, so every scene is built from `assets`.
    libero_lib._assets_path_cache = str(Path(assets).expanduser().resolve())
    return libero_lib


def missing_asset_folders(assets: str | Path) -> list[str]:
    """The folders of :data:`ASSET_FOLDERS` that ``assets`` lacks (all when it is absent)."""
    root = Path(assets).expanduser()
    return [name for name in ASSET_FOLDERS if not (root / name).is_dir()]


def _missing_assets(path: Path, cause: str = "") -> MissingPathError:
    """The error for an unusable assets folder: why (``cause``) and how to get the assets."""
    how = (
        f"hf-libero downloads LIBERO's meshes and textures from the Hugging Face hub "
        f"(lerobot/libero-assets) into {HUB_ASSETS_DIR} on first use, with network access "
        f"and HF_HUB_OFFLINE unset; or set {_ASSETS_SETTING}=/path/to/assets, a copy holding "
        f"{', '.join(f'{name}/' for name in ASSET_FOLDERS)}"
    )
    return MissingPathError(
        "LIBERO assets", path, _ASSETS_SETTING, f"{cause}. {how}" if cause else how
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_assets(assets_dir: str | Path | None, config_dir: str | Path) -> Path:
    """The folder LIBERO's scenes are built from; raises if it is missing or incomplete.

    ``assets_dir`` is used as given. ``None`` means hf-libero's locations: its package
    folder, then its hub download folder, downloading there when neither is complete and
    the hub is not disabled by ``HF_HUB_OFFLINE``.

    Raises:
        MissingPathError: naming ``task_suite.assets_dir``, with how to get the assets.
    """
    if assets_dir is not None:
        path = Path(assets_dir).expanduser()
        missing = missing_asset_folders(path)
        if missing:
            raise _missing_assets(path, f"It lacks {', '.join(missing)}" if path.exists() else "")
        return path.resolve()
    for candidate in (libero_package_dir() / "assets", HUB_ASSETS_DIR):
        if not missing_asset_folders(candidate):
            return candidate
    if _hub_offline():
        raise _missing_assets(HUB_ASSETS_DIR, "The hub download is disabled by HF_HUB_OFFLINE")
    import_libero(config_dir, HUB_ASSETS_DIR)
    from libero.libero.utils.download_utils import download_assets_from_huggingface

    try:
        download_assets_from_huggingface(download_dir=str(HUB_ASSETS_DIR))
    except Exception as e:  # any hub/network failure ends in the same advice
        cause = f"The download failed: {type(e).__name__}: {e}"
        raise _missing_assets(HUB_ASSETS_DIR, cause) from e
    missing = missing_asset_folders(HUB_ASSETS_DIR)
    if missing:
        raise _missing_assets(HUB_ASSETS_DIR, f"The download lacks {', '.join(missing)}")
    return HUB_ASSETS_DIR


# --- tasks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiberoTask:
    """One task of a LIBERO benchmark suite, in the benchmark's order."""

    name: str  # the BDDL file's stem, e.g. "pick_up_the_black_bowl_..._place_it_on_the_plate"
    instruction: str  # the benchmark's language for the task
    bddl_file: Path  # the scene and goal definition hf-libero builds the env from
    init_states_file: Path  # LIBERO's fixed evaluation init states (a torch-saved array)


def libero_tasks(suite: str, config_dir: str | Path, assets: str | Path) -> list[LiberoTask]:
    """The tasks of ``suite`` in hf-libero's benchmark order (task order 0, as LIBERO evaluates).

    Raises:
        ConfigError: ``suite`` is not one of :data:`SUITE_MAX_STEPS`.
    """
    if suite not in SUITE_MAX_STEPS:
        raise unknown_choice("LIBERO suite", str(suite), SUITE_MAX_STEPS)
    import_libero(config_dir, assets)
    from libero.libero.benchmark import get_benchmark_dict

    paths = libero_paths(Path(config_dir).expanduser().resolve(), Path(assets))
    # The benchmark prints its task order on construction; keep the logs to our own lines.
    with contextlib.redirect_stdout(io.StringIO()):
        benchmark = get_benchmark_dict()[suite]()
    return [
        LiberoTask(
            name=task.name,
            instruction=task.language,
            bddl_file=Path(paths["bddl_files"]) / task.problem_folder / task.bddl_file,
            init_states_file=Path(paths["init_states"])
            / task.problem_folder
            / task.init_states_file,
        )
        for task in benchmark.tasks
    ]


def load_init_states(task: LiberoTask) -> np.ndarray:
    """``float64[n_init_states, state_dim]``: flattened MuJoCo states for ``set_init_state``."""
    import torch

    # The files are pickled NumPy arrays shipped inside hf-libero (trusted, like its code).
    return np.asarray(torch.load(task.init_states_file, weights_only=False), dtype=np.float64)


# --- env and suite ------------------------------------------------------------------------


class LiberoEnv(SimEnv):
    """One LIBERO task in hf-libero's ``OffScreenRenderEnv`` (Panda, OSC_POSE, 20 Hz).

    Build it through :meth:`LiberoSuite.make_env`, in the process that uses it.
    """

    def __init__(
        self,
        task: LiberoTask,
        task_id: int,
        init_states: np.ndarray,
        max_steps: int,
        resolution: int,
        cameras: Sequence[str],
        num_steps_wait: int,
    ) -> None:
        from libero.libero.envs import OffScreenRenderEnv

        self.task_id = task_id
        self.instruction = task.instruction
        self.max_steps = max_steps
        self.cameras = tuple(cameras)
        self.init_states = init_states
        self.num_steps_wait = num_steps_wait
        self._steps = 0
        self._started = False
        # ignore_done: the horizon is ours (max_steps); robosuite would raise past its own.
        self._env = OffScreenRenderEnv(
            bddl_file_name=str(task.bddl_file),
            camera_names=[ROBOSUITE_CAMERAS[cam] for cam in self.cameras],
            camera_heights=resolution,
            camera_widths=resolution,
            control_freq=LIBERO_FPS,
            ignore_done=True,
        )

    def reset(self, seed: int) -> dict[str, Any]:
        """Start from init state ``seed`` (or a layout sampled with it), then settle.

        Returns the observation after ``num_steps_wait`` no-op steps (gripper open).
        """
        seed = int(seed)
        if not 0 <= seed < _MAX_SEED:
            raise ValueError(f"seed {seed} must be in [0, 2**32)")
        self._env.seed(seed)
        raw_obs = self._env.reset()
        if seed < len(self.init_states):
            raw_obs = self._env.set_init_state(self.init_states[seed])
        for _ in range(self.num_steps_wait):
            raw_obs, _, _, _ = self._env.step(NOOP_ACTION)
        self._steps = 0
        self._started = True
        return libero_observation(raw_obs, self.cameras)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one ``float32[7]`` delta end-effector action, clipped to [-1, 1]."""
        if not self._started:
            raise RuntimeError("call reset(seed) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        raw_obs, reward, _, _ = self._env.step(np.clip(a, -1.0, 1.0))
        self._steps += 1
        success = self.is_success()
        return StepResult(
            obs=libero_observation(raw_obs, self.cameras),
            reward=float(reward),
            terminated=success,
            truncated=self._steps >= self.max_steps,
            info={"success": success, "step": self._steps},
        )

    def is_success(self) -> bool:
        return bool(self._env.check_success())

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _check_no_perturbation(value: PerturbationConfig | Mapping[str, Any] | None) -> None:
    """LIBERO's scenes are fixed: any perturbation is an error, never silently ignored."""
    if value is None:
        return
    if isinstance(value, Mapping):
        valid = [f.name for f in dataclasses.fields(PerturbationConfig)]
        for key in value:
            if key not in valid:
                raise unknown_choice("perturbation field", str(key), valid)
        value = PerturbationConfig(**{str(k): v for k, v in value.items()})
    if not isinstance(value, PerturbationConfig):
        raise ConfigError(
            f"perturbation must be a PerturbationConfig or a mapping, got {type(value).__name__}"
        )
    default = PerturbationConfig()
    requested = [
        f"task_suite.perturbation.{f.name}={getattr(value, f.name)}"
        for f in dataclasses.fields(PerturbationConfig)
        if getattr(value, f.name) != getattr(default, f.name)
    ]
    if requested:
        raise ConfigError(
            f"LIBERO scenes are fixed: {', '.join(requested)} is not supported. "
            "Remove it, or use a tabletop task suite for perturbations."
        )


class LiberoSuite(TaskSuite):
    """A LIBERO benchmark suite: ``libero_spatial | libero_object | libero_goal | libero_10 |
    libero_90``, its tasks in benchmark order, evaluated from LIBERO's fixed init states.

    Construction checks every setting, writes hf-libero's config file, makes sure the assets
    are there (see :func:`resolve_assets`) and loads each task's init states; scenes are
    built only by :meth:`make_env`.

    Args:
        max_steps: horizon per episode; ``None`` = the suite's (:data:`SUITE_MAX_STEPS`).
        n_eval_seeds: eval episodes per task, init states ``0..n_eval_seeds-1`` (at most 50).
        assets_dir: LIBERO's assets folder; ``None`` = hf-libero's (downloaded on first use).
        num_steps_wait: no-op steps after each reset while objects settle.
        config_dir: where hf-libero's ``config.yaml`` is written (``None`` =
            ``~/.cache/vlaexp/libero``).
    """

    def __init__(
        self,
        name: str,
        suite: str,
        max_steps: int | None = None,
        fps: int = LIBERO_FPS,
        resolution: int = 256,
        n_eval_seeds: int = 50,
        perturbation: PerturbationConfig | Mapping[str, Any] | None = None,
        assets_dir: str | Path | None = None,
        num_steps_wait: int = 10,
        cameras: Sequence[str] = CAMERA_NAMES,
        config_dir: str | Path | None = None,
    ) -> None:
        if suite not in SUITE_MAX_STEPS:
            raise unknown_choice("LIBERO suite", str(suite), SUITE_MAX_STEPS)
        cams = tuple(str(c) for c in cameras)
        if not cams:
            raise ConfigError(f"cameras is empty; choose from {', '.join(ROBOSUITE_CAMERAS)}")
        for cam in cams:
            if cam not in ROBOSUITE_CAMERAS:
                raise unknown_choice("LIBERO camera", cam, ROBOSUITE_CAMERAS)
        max_steps = SUITE_MAX_STEPS[suite] if max_steps is None else int(max_steps)
        if max_steps < 1:
            raise ConfigError(f"max_steps={max_steps} must be a positive number of steps")
        if int(fps) != LIBERO_FPS:
            raise ConfigError(
                f"fps={fps}: LIBERO's controller and demonstrations run at {LIBERO_FPS} Hz"
            )
        if int(resolution) < 1:
            raise ConfigError(f"resolution={resolution} must be a positive number of pixels")
        if int(num_steps_wait) < 0:
            raise ConfigError(f"num_steps_wait={num_steps_wait} must be >= 0")
        if int(n_eval_seeds) < 1:
            raise ConfigError(f"n_eval_seeds={n_eval_seeds} must be positive")
        _check_no_perturbation(perturbation)
        self.name = str(name)
        self.suite = str(suite)
        self.max_steps = max_steps
        self.fps = LIBERO_FPS
        self.resolution = int(resolution)
        self.n_eval_seeds = int(n_eval_seeds)
        self.num_steps_wait = int(num_steps_wait)
        self.cameras = cams
        self.config_dir = Path(config_dir or DEFAULT_CONFIG_DIR).expanduser().resolve()
        self.assets_dir = resolve_assets(assets_dir, self.config_dir)
        self.tasks = libero_tasks(self.suite, self.config_dir, self.assets_dir)
        self.init_states = [load_init_states(task) for task in self.tasks]
        fewest = min(len(states) for states in self.init_states)
        if self.n_eval_seeds > fewest:
            raise ConfigError(
                f"n_eval_seeds={self.n_eval_seeds}: {self.suite} has {fewest} fixed init "
                f"states per task; choose at most {fewest}"
            )

    @property
    def task_ids(self) -> list[int]:
        return list(range(len(self.tasks)))

    def task(self, task_id: int) -> LiberoTask:
        """One task's name, instruction and files."""
        if not isinstance(task_id, int) or not 0 <= task_id < len(self.tasks):
            raise ConfigError(
                f"task id {task_id!r} is out of range: {self.suite} has tasks "
                f"0..{len(self.tasks) - 1}"
            )
        return self.tasks[task_id]

    def instruction(self, task_id: int) -> str:
        return self.task(task_id).instruction

    def n_init_states(self, task_id: int) -> int:
        """How many fixed init states LIBERO ships for one task."""
        self.task(task_id)
        return len(self.init_states[task_id])

    def eval_seeds(self, task_id: int) -> list[int]:
        """``0..n_eval_seeds-1``: eval episode ``i`` starts from LIBERO's init state ``i``."""
        self.task(task_id)
        return list(range(self.n_eval_seeds))

    def train_seeds(self, task_id: int, n: int, offset: int = 0) -> list[int]:
        """``n`` seeds of sampled layouts (never a fixed init state), from ``SAMPLED_SEED_START``."""
        self.task(task_id)
        start = SAMPLED_SEED_START + offset
        return list(range(start, start + n))

    def make_env(self, task_id: int) -> LiberoEnv:
        """Build the scene of one task (needs the assets; renders the suite's cameras)."""
        task = self.task(task_id)
        import_libero(self.config_dir, self.assets_dir)  # this process may be a fresh worker
        return LiberoEnv(
            task,
            task_id=task_id,
            init_states=self.init_states[task_id],
            max_steps=self.max_steps,
            resolution=self.resolution,
            cameras=self.cameras,
            num_steps_wait=self.num_steps_wait,
        )
