"""``RobosuiteEnv``: one robosuite task (Panda, OSC_POSE) under vlaexp's :class:`SimEnv` contract.

robosuite steps the physics and the controller; vlaexp renders the cameras itself (see
``render.py``), builds LIBERO's 8-D state from robosuite's proprioception, counts steps
against its own horizon and classifies failures from privileged state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError, unknown_choice
from vlaexp.sim.base import ACTION_DIM, CAMERA_NAMES, SimEnv, StepResult
from vlaexp.sim.robosuite.library import PHYSICS_HZ, global_numpy_seed, make_panda_env
from vlaexp.sim.robosuite.perturb import ScenePerturber
from vlaexp.sim.robosuite.render import CameraRenderer
from vlaexp.sim.robosuite.tasks import Placement, PlacementFn, RobosuiteTask, z_extent

# Our camera names -> robosuite's.
ROBOSUITE_CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
# Fixed seed for what robosuite samples while building a model (Lift's cube size), so every
# env of a task has the same model and a reset seed alone fixes the episode.
_BUILD_SEED = 0
# robosuite drops objects from 1 cm above their support; these no-op control steps after a
# reset let them land (LIBERO's evaluation waits 10 steps for the same reason).
SETTLE_STEPS = 5
# A held object counts as lifted once it is this far above where the episode started (m).
LIFT_MARGIN = 0.005
# An object let go after lifting counts as dropped (not set down) when it then falls this far.
DROP_HEIGHT = 0.03


def check_fps(fps: int) -> None:
    """A control step must be a whole number of robosuite's 2 ms physics steps."""
    if fps < 1 or PHYSICS_HZ % fps:
        raise ConfigError(
            f"fps={fps} is not a whole number of robosuite's {1000 // PHYSICS_HZ} ms physics "
            "steps; use a divisor of 500 such as 10, 20, 25 or 50"
        )


def check_cameras(cameras: Sequence[str]) -> tuple[str, ...]:
    """The cameras as a tuple; a clear error for an unknown or empty selection."""
    if not cameras:
        raise ConfigError(f"no camera selected; choose from {', '.join(CAMERA_NAMES)}")
    for cam in cameras:
        if cam not in ROBOSUITE_CAMERAS:
            raise unknown_choice("camera for the robosuite suites", str(cam), ROBOSUITE_CAMERAS)
    return tuple(str(c) for c in cameras)


def quat_xyzw_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """float[3] rotation vector of an (x, y, z, w) quaternion float[4], as LIBERO computes it.

    Same as robosuite's ``transform_utils.quat2axisangle``: the angle is ``2 acos(w)`` in
    [0, 2 pi], not wrapped, so states match LIBERO datasets exactly.
    """
    w = min(max(float(quat[3]), -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat[:3], dtype=np.float64) * 2.0 * math.acos(w) / den


class RobosuiteEnv(SimEnv):
    """A robosuite task with LIBERO's observation and action contract.

    ``obs = {"images": {cam: uint8[resolution, resolution, 3]}, "state": float32[8]}`` with
    state = ``robot0_eef_pos`` (3), axis-angle of ``robot0_eef_quat`` (3),
    ``robot0_gripper_qpos`` (2). Actions float32[7] in [-1, 1] go to robosuite's OSC_POSE
    controller (delta xyz up to 5 cm, delta axis-angle up to 0.5 rad, gripper -1 open / +1
    close). With ``render=False`` the images dict is empty (for scripted-expert evaluation).
    """

    def __init__(
        self,
        task: RobosuiteTask,
        task_id: int,
        max_steps: int,
        fps: int = 20,
        resolution: int = 128,
        cameras: Sequence[str] = CAMERA_NAMES,
        perturbation: PerturbationConfig | None = None,
        render: bool = True,
    ) -> None:
        self.cameras = check_cameras(cameras)
        check_fps(fps)
        if max_steps < 1:
            raise ConfigError(f"max_steps={max_steps} must be positive")
        if resolution < 8:
            raise ConfigError(f"resolution={resolution} is too small; use at least 8 pixels")
        self.task = task
        self.task_id = task_id
        self.instruction = task.instruction
        self.max_steps = max_steps
        self.fps = fps
        self.resolution = resolution
        self.perturbation = perturbation or PerturbationConfig()
        self.seed: int | None = None

        self.raw = make_panda_env(task.env_name, fps, _BUILD_SEED)
        self.model: mujoco.MjModel = self.raw.sim.model._model
        self.data: mujoco.MjData = self.raw.sim.data._data
        robot = self.raw.robots[0]
        self._gripper = robot.gripper
        self._grip_site = robot.eef_site_id
        self._robot_base = self.model.body(robot.robot_model.root_body).id
        self._objects = {o.name: o for o in self.raw.model.mujoco_objects}
        self._object_bodies = {n: self.model.body(o.root_body).id for n, o in self._objects.items()}
        self._extents = {
            n: z_extent(self.raw, n) for n, o in self._objects.items() if o.contact_geoms
        }
        object_geoms = [
            [self.model.geom(g).id for g in self._objects[name].visual_geoms]
            for name in task.scene_objects
        ]
        self._perturber = ScenePerturber(self.model, task, object_geoms, self.perturbation)
        self._renderer: CameraRenderer | None = None
        if render:
            cams = {c: ROBOSUITE_CAMERAS[c] for c in self.cameras}
            try:
                self._renderer = CameraRenderer(self.model, self.data, cams, resolution)
            except RuntimeError:
                self.raw.close()
                raise
        self._steps = 0
        self._start_z = 0.0
        self._held = False
        self._ever_lifted = False
        self._let_go_z: float | None = None  # height at which the lifted target was let go

    # ------------------------------------------------------------------ SimEnv contract
    def reset(self, seed: int) -> dict[str, Any]:
        """Sample the layout and the arm's start from ``seed`` (same seed, same first obs)."""
        if int(seed) < 0:
            raise ValueError(f"seed={seed} must be non-negative")
        self.seed = int(seed)
        self._perturber.apply(np.random.default_rng([self.seed, 1]))
        # robosuite's soft reset keeps the gripper's commanded opening from the last episode;
        # a fresh gripper starts from zero (half open).
        self._gripper.current_action = np.zeros(self._gripper.dof)
        with global_numpy_seed(self.seed):
            raw_obs = self.raw.reset()
        for _ in range(SETTLE_STEPS):
            raw_obs, _, _, _ = self.raw.step(np.zeros(ACTION_DIM))
        self._steps = 0
        self._start_z = float(self.object_pos(self.task.target)[2])
        self._held = False
        self._ever_lifted = False
        self._let_go_z = None
        return self._observe(raw_obs)

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action float32[7] (clipped to [-1, 1]) for 1/fps seconds."""
        if self.seed is None:
            raise RuntimeError("call reset(seed) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        raw_obs, _, _, _ = self.raw.step(np.clip(a, -1.0, 1.0))
        self._steps += 1
        self._track_target()
        success = self.is_success()
        info = {"success": success, "step": self._steps, "task_id": self.task_id, "seed": self.seed}
        return StepResult(
            obs=self._observe(raw_obs),
            reward=1.0 if success else 0.0,
            terminated=success,
            truncated=self._steps >= self.max_steps,
            info=info,
        )

    def is_success(self) -> bool:
        """robosuite's own success check of the task."""
        return bool(self.raw._check_success())

    def failure_mode(self) -> str:
        """Why the episode failed, from what happened to the target object.

        ``never_grasped``: it was never held and lifted; ``dropped``: after being lifted it
        was let go (or slipped) and fell more than 3 cm, or let go at all in a lift-only task;
        ``missed_goal``: it was set down but the goal does not hold (wrong place, toppled);
        ``timeout``: still held when the steps ran out.
        """
        if self.seed is None:
            raise RuntimeError("call reset(seed) and run an episode before failure_mode()")
        if self.is_success():
            raise RuntimeError("the episode succeeded; failure_mode() explains failed ones")
        if not self._ever_lifted:
            return "never_grasped"
        if self._held or self._let_go_z is None:
            return "timeout"
        if self.task.placement is None:
            return "dropped"
        fall = self._let_go_z - float(self.object_pos(self.task.target)[2])
        return "dropped" if fall > DROP_HEIGHT else "missed_goal"

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.raw.close()

    # ------------------------------------------------------------------ observations
    def render(self) -> dict[str, np.ndarray]:
        """``{camera: uint8[resolution, resolution, 3]}`` of the current state."""
        if self._renderer is None:
            raise RuntimeError("this env was built with render=False")
        return self._renderer.render()

    def _observe(self, raw_obs: dict[str, np.ndarray]) -> dict[str, Any]:
        state = np.concatenate(
            [
                raw_obs["robot0_eef_pos"],
                quat_xyzw_to_axis_angle(raw_obs["robot0_eef_quat"]),
                raw_obs["robot0_gripper_qpos"],
            ]
        ).astype(np.float32)
        images = self._renderer.render() if self._renderer is not None else {}
        return {"images": images, "state": state}

    def _track_target(self) -> None:
        """Update what failure_mode() needs: was the target lifted, how high was it let go."""
        held = self.is_grasping(self.task.target)
        z = float(self.object_pos(self.task.target)[2])
        if held and z > self._start_z + LIFT_MARGIN:
            self._ever_lifted = True
        if self._held and not held and self._ever_lifted:
            self._let_go_z = z
        self._held = held

    # ------------------------------------------------------------------ privileged state
    @property
    def step_count(self) -> int:
        return self._steps

    def grip_pos(self) -> np.ndarray:
        """float[3] the grip site between the fingertips (the point OSC_POSE moves), world."""
        return self.data.site_xpos[self._grip_site].copy()

    def grip_mat(self) -> np.ndarray:
        """float[3, 3] grip-site orientation; column 0 is the fingers' closing axis."""
        return self.data.site_xmat[self._grip_site].reshape(3, 3).copy()

    def robot_base_pos(self) -> np.ndarray:
        """float[3] origin of the arm's base, world frame."""
        return self.data.xpos[self._robot_base].copy()

    def object_radius(self, name: str) -> float:
        """Horizontal radius (m) of object ``name`` (robosuite's ``horizontal_radius``)."""
        return float(self._objects[self._check(name)].horizontal_radius)

    def object_pos(self, name: str) -> np.ndarray:
        """float[3] body origin of object ``name``, world frame."""
        return self.data.xpos[self._body(name)].copy()

    def object_yaw(self, name: str) -> float:
        """Heading of object ``name`` about the world z axis, radians."""
        mat = self.data.xmat[self._body(name)].reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def object_top(self, name: str) -> float:
        """Height (m) of the top of object ``name``'s collision geometry, world frame."""
        return float(self.object_pos(name)[2]) + self._extents[self._check(name)][1]

    def is_grasping(self, name: str) -> bool:
        """Both finger pads touch object ``name`` (robosuite's grasp check)."""
        return bool(self.raw._check_grasp(gripper=self._gripper, object_geoms=self._objects[name]))

    def set_object_pos(self, name: str, pos: np.ndarray) -> None:
        """Put object ``name``'s origin at ``pos`` float[3] (same orientation), at rest."""
        joint = self.model.joint(self._objects[self._check(name)].joints[0])
        adr, dof = joint.qposadr[0], joint.dofadr[0]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qvel[dof : dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def placement(self, fn: PlacementFn, held: str | None = None) -> Placement:
        """The goal region ``fn`` gives for ``held`` (default: the task's target) right now."""
        return fn(self.raw, held or self.task.target)

    def _check(self, name: str) -> str:
        if name not in self._objects:
            raise unknown_choice("object", name, self._objects)
        return name

    def _body(self, name: str) -> int:
        return self._object_bodies[self._check(name)]
