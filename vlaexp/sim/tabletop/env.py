"""``TabletopEnv``: one task of the tabletop benchmark as a :class:`SimEnv`.

Control follows LIBERO's OSC_POSE interpretation of the 7-D action: each 20 Hz step moves the
tool centre point by ``action[:3] * 0.05`` m and rotates the gripper by the world-frame
rotation vector ``action[3:6] * 0.5`` rad (about the tool centre point), relative to where it
is now; ``action[6]`` sets the fingers from open (-1) to closed (+1). A mocap target drags the
floating gripper through a weld constraint, so grasped objects feel real contact forces.

Rendering is headless through ``MUJOCO_GL`` (``egl`` unless set; this package sets it before
importing mujoco, so export it yourself if your program imports mujoco first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError, unknown_choice
from vlaexp.sim.base import ACTION_DIM, CAMERA_NAMES, SimEnv, StepResult
from vlaexp.sim.tabletop.objects import ObjectKind
from vlaexp.sim.tabletop.perturb import ScenePerturber, distractor_kinds, place_distractors
from vlaexp.sim.tabletop.rotations import (
    axis_angle_to_quat,
    quat_mul,
    quat_to_axis_angle,
    quat_yaw,
    yaw_quat,
)
from vlaexp.sim.tabletop.scene import (
    DOWN_QUAT,
    FINGER_OPEN,
    HOME_TCP,
    TCP_OFFSET,
    TIMESTEP,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    SceneSpec,
    build_scene_xml,
)

if TYPE_CHECKING:
    from vlaexp.sim.tabletop.tasks import TaskSpec

POS_SCALE = 0.05  # metres per step at |action| = 1 (robosuite OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per step at |action| = 1
SETTLE_STEPS = 50  # physics steps (0.1 s) letting objects come to rest after a reset
LIFTED = 0.015  # an object held this far above where it started counts as grasped (m)
DROP_GAP = 0.03  # an object let go this far above the surface below it was dropped (m)
_GRIPPER_BODIES = ("gripper", "finger_1", "finger_2")


def control_substeps(fps: int) -> int:
    """Physics steps per control step at ``fps``; a clear error if it is not a whole number."""
    substeps = round(1.0 / (fps * TIMESTEP)) if fps > 0 else 0
    if substeps < 1 or abs(substeps * TIMESTEP * fps - 1.0) > 1e-6:
        raise ConfigError(
            f"fps={fps} is not a whole number of {TIMESTEP * 1000:g} ms physics steps; "
            "use a divisor of 500 such as 10, 20, 25 or 50"
        )
    return substeps


def check_resolution(resolution: int) -> None:
    if resolution < 8:
        raise ConfigError(f"resolution={resolution} is too small; use at least 8 pixels")


class TabletopEnv(SimEnv):
    """A tabletop task with LIBERO's observation and action contract.

    ``obs = {"images": {cam: uint8[resolution, resolution, 3]}, "state": float32[8],
    "object_position": float32[3]}`` with state = TCP xyz (m), gripper orientation as
    axis-angle (3), finger joint positions (``[+opening, -opening]``, 0.04 = open), and the
    position of the task's object (:meth:`task_object_pos`; what a perception module would
    give, for monitors such as adaptive RVQ decoding's gripper distance; policies do not
    read it). With ``render=False`` the images dict is empty (for scripted-expert
    evaluation, which reads privileged state instead).
    """

    def __init__(
        self,
        task: TaskSpec,
        task_id: int,
        max_steps: int,
        fps: int = 20,
        resolution: int = 128,
        cameras: Sequence[str] = CAMERA_NAMES,
        perturbation: PerturbationConfig | None = None,
        render: bool = True,
    ) -> None:
        for cam in cameras:
            if cam not in CAMERA_NAMES:
                raise unknown_choice("camera", cam, CAMERA_NAMES)
        if not cameras:
            raise ConfigError(f"no camera selected; choose from {', '.join(CAMERA_NAMES)}")
        substeps = control_substeps(fps)
        check_resolution(resolution)
        if max_steps < 1:
            raise ConfigError(f"max_steps={max_steps} must be positive")
        self.task = task
        self.task_id = task_id
        self.instruction = task.instruction
        self.max_steps = max_steps
        self.fps = fps
        self.cameras = tuple(cameras)
        self.resolution = resolution
        self.perturbation = perturbation or PerturbationConfig()
        self.substeps = substeps
        self.seed: int | None = None

        p = self.perturbation
        self.spec = SceneSpec(
            objects=task.scene.objects,
            fixtures=task.scene.fixtures,
            distractors=distractor_kinds(task.scene, p.distractors),
            table_textures=p.table_texture,
            object_textures=p.object_colors,
        )
        self.model = mujoco.MjModel.from_xml_string(build_scene_xml(self.spec, resolution))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._gripper_id = m.body("gripper").id
        self._tcp_id = m.site("tcp").id
        self._finger_adr = [m.jnt_qposadr[m.joint(f"finger_{i}").id] for i in (1, 2)]
        self._gripper_adr = m.jnt_qposadr[m.joint("gripper").id]
        self._gripper_dof = m.jnt_dofadr[m.joint("gripper").id]
        self._body_ids = {m.body(i).name: i for i in range(1, m.nbody)}
        self._joint_ids = {m.joint(i).name: i for i in range(m.njnt)}
        gripper_bodies = [self._body_ids[b] for b in _GRIPPER_BODIES]
        self._gripper_geoms = np.flatnonzero(np.isin(m.geom_bodyid, gripper_bodies))
        self._kinds: dict[str, ObjectKind] = {o.name: o.kind for o in self.spec.objects}
        self._kinds.update({f"distractor_{i}": k for i, k in enumerate(self.spec.distractors)})
        self._perturber = ScenePerturber(m, self.spec, p)
        self._renderer = mujoco.Renderer(m, resolution, resolution) if render else None
        self._cam_ids = {c: m.camera(c).id for c in self.cameras}
        self._step_count = 0
        self._start_z: dict[str, float] = {}
        self._held: dict[str, bool] = {}
        self._lifted: set[str] = set()
        self._dropped: set[str] = set()
        self._contacted: set[str] = set()
        self._closing = False
        self._grasp_xy_error: float | None = None

    # ------------------------------------------------------------------ SimEnv contract
    def reset(self, seed: int) -> dict[str, Any]:
        """Lay out the scene from ``seed`` (same seed, same first observation)."""
        m, d = self.model, self.data
        self.seed = int(seed)
        mujoco.mj_resetData(m, d)
        layout = self.task.layout(np.random.default_rng(self.seed))
        for name, (x, y, yaw) in layout.poses.items():
            if name in self._kinds:
                z = layout.support_z[name] + self._kinds[name].rest_z
                self._write_object_pose(name, np.array([x, y, z]), yaw_quat(yaw))
            else:
                bid = m.body(name).id
                m.body_pos[bid] = (x, y, 0.0)
                m.body_quat[bid] = yaw_quat(yaw)
        perturb_rng = np.random.default_rng([self.seed, 1])
        self._perturber.apply(perturb_rng)
        for name, (x, y, yaw) in place_distractors(layout, self.spec.distractors, perturb_rng):
            z = self._kinds[name].rest_z
            self._write_object_pose(name, np.array([x, y, z]), yaw_quat(yaw))
        start_rng = np.random.default_rng([self.seed, 2])
        tcp = HOME_TCP + start_rng.uniform([-0.02, -0.02, -0.01], [0.02, 0.02, 0.01])
        self._teleport_gripper(tcp, DOWN_QUAT, FINGER_OPEN)
        mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
        self._step_count = 0
        self._start_z = {n: float(self.object_pos(n)[2]) for n in self.task.carried}
        self._held = dict.fromkeys(self.task.carried, False)
        self._lifted, self._dropped, self._contacted = set(), set(), set()
        self._closing, self._grasp_xy_error = False, None
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action float32[7] (clipped to [-1, 1]) for 1/fps seconds."""
        if self.seed is None:
            raise RuntimeError("call reset(seed) before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action has non-finite values: {a}")
        a = np.clip(a, -1.0, 1.0)
        self._track_grasp(a[6] > 0.0)
        d = self.data
        quat = quat_mul(axis_angle_to_quat(a[3:6] * ROT_SCALE), d.xquat[self._gripper_id])
        tcp = np.clip(self.tcp_pos() + a[:3] * POS_SCALE, WORKSPACE_LOW, WORKSPACE_HIGH)
        d.mocap_quat[0] = quat
        d.mocap_pos[0] = tcp - _approach_axis(quat) * TCP_OFFSET
        opening = finger_opening(a[6])
        d.ctrl[:] = (opening, -opening)
        mujoco.mj_step(self.model, d, nstep=self.substeps)
        self._step_count += 1
        self._track_failures()
        subgoals = [bool(goal.holds(self)) for goal in self.task.goals]
        success = all(subgoals)
        info = {
            "success": success,
            "step": self._step_count,
            "subgoals": subgoals,
            "task_id": self.task_id,
            "seed": self.seed,
            "grasp_xy_error": self._grasp_xy_error,
        }
        return StepResult(
            obs=self._observe(),
            reward=1.0 if success else 0.0,
            terminated=success,
            truncated=self._step_count >= self.max_steps,
            info=info,
        )

    def is_success(self) -> bool:
        return all(bool(goal.holds(self)) for goal in self.task.goals)

    def failure_mode(self) -> str:
        """never_grasped / dropped / missed_goal / timeout, from what happened this episode."""
        carried = self.task.carried
        if carried and not self._lifted:
            return "never_grasped"
        if self._dropped:
            return "dropped"
        if carried or self._contacted:
            return "missed_goal"
        return "timeout"

    def _track_grasp(self, closing: bool) -> None:
        """At the episode's first closing command (the gripper action turning positive), the
        distance (m) in the table plane from the TCP to the nearest object the task carries:
        how precisely a policy places the gripper before it grasps. None until then and in
        tasks that carry nothing."""
        if closing and not self._closing and self._grasp_xy_error is None and self.task.carried:
            tcp = self.tcp_pos()[:2]
            self._grasp_xy_error = min(
                float(np.linalg.norm(self.object_pos(n)[:2] - tcp)) for n in self.task.carried
            )
        self._closing = closing

    def _track_failures(self) -> None:
        """Per step: which carried objects were lifted, which were let go in mid-air, and
        which of the task's fixtures the gripper touched."""
        for name in self.task.carried:
            held = self.touching_gripper(name)
            z = float(self.object_pos(name)[2])
            if held and z > self._start_z[name] + LIFTED:
                self._lifted.add(name)
            if (
                self._held[name]
                and not held
                and name in self._lifted
                and self._gap_below(name) > DROP_GAP
            ):
                self._dropped.add(name)
            self._held[name] = held
        for body in self.task.manipulated:
            if body not in self._contacted and self.touching_gripper(body):
                self._contacted.add(body)

    def _gap_below(self, name: str) -> float:
        """Distance (m) from the bottom of object ``name`` to the first surface below it."""
        bottom = self.object_pos(name) - np.array([0.0, 0.0, self._kinds[name].rest_z + 1e-3])
        geom = np.zeros(1, dtype=np.int32)
        dist = mujoco.mj_ray(
            self.model,
            self.data,
            bottom,
            np.array([0.0, 0.0, -1.0]),
            None,
            1,
            self._body_ids[name],
            geom,
        )
        return float(dist) if dist >= 0 else float("inf")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ observations
    def state(self) -> np.ndarray:
        """float32[8]: TCP xyz, gripper axis-angle (3), finger joint positions (2)."""
        return np.concatenate(
            [self.tcp_pos(), quat_to_axis_angle(self.gripper_quat()), self.finger_qpos()]
        ).astype(np.float32)

    def render(self, camera: str) -> np.ndarray:
        """uint8[resolution, resolution, 3] image from ``camera``."""
        if self._renderer is None:
            raise RuntimeError("this env was built with render=False")
        self._renderer.update_scene(self.data, camera=self.model.camera(camera).id)
        return self._renderer.render()

    def _observe(self) -> dict[str, Any]:
        images = {}
        if self._renderer is not None:
            for cam, cid in self._cam_ids.items():
                self._renderer.update_scene(self.data, camera=cid)
                images[cam] = self._renderer.render()
        return {
            "images": images,
            "state": self.state(),
            "object_position": self.task_object_pos().astype(np.float32),
        }

    # ------------------------------------------------------------------ privileged state
    @property
    def step_count(self) -> int:
        return self._step_count

    @property
    def object_names(self) -> tuple[str, ...]:
        """Movable objects, task objects first, then distractors."""
        return tuple(self._kinds)

    def object_kind(self, name: str) -> ObjectKind:
        if name not in self._kinds:
            raise unknown_choice("object", name, self._kinds)
        return self._kinds[name]

    def tcp_pos(self) -> np.ndarray:
        """Tool centre point ``[3]`` (between the fingertips), world frame."""
        return self.data.site_xpos[self._tcp_id].copy()

    def gripper_quat(self) -> np.ndarray:
        """Gripper orientation ``[4]`` (w, x, y, z); its z axis points from palm to fingers."""
        return self.data.xquat[self._gripper_id].copy()

    def gripper_yaw(self) -> float:
        """Heading of the gripper's finger-closing axis in the table plane, radians."""
        return quat_yaw(self.gripper_quat())

    def finger_qpos(self) -> np.ndarray:
        """Finger joint positions ``[2]``: ``[+opening, -opening]``."""
        return self.data.qpos[self._finger_adr].copy()

    def object_pos(self, name: str) -> np.ndarray:
        """Centre ``[3]`` of a movable object."""
        return self.data.xpos[self._body_ids[self._check_object(name)]].copy()

    def object_quat(self, name: str) -> np.ndarray:
        """Orientation ``[4]`` (w, x, y, z) of a movable object."""
        return self.data.xquat[self._body_ids[self._check_object(name)]].copy()

    def object_yaw(self, name: str) -> float:
        return quat_yaw(self.object_quat(name))

    def task_object_pos(self) -> np.ndarray:
        """``[3]``: the first object the task carries, else the first body it pushes,
        presses or turns, else zeros."""
        if self.task.carried:
            return self.object_pos(self.task.carried[0])
        if self.task.manipulated:
            return self.body_pos(self.task.manipulated[0])
        return np.zeros(3)

    def body_pos(self, name: str, frame: str | None = None) -> np.ndarray:
        """Origin ``[3]`` of any body, in the world or in body ``frame``'s frame."""
        pos = self.data.xpos[self._body_id(name)].copy()
        if frame is None:
            return pos
        fid = self._body_id(frame)
        return self.data.xmat[fid].reshape(3, 3).T @ (pos - self.data.xpos[fid])

    def point_to_world(self, body: str, local: np.ndarray) -> np.ndarray:
        """A point ``[3]`` given in ``body``'s frame, in world coordinates ``[3]``."""
        bid = self._body_id(body)
        return self.data.xpos[bid] + self.data.xmat[bid].reshape(3, 3) @ local

    def joint_value(self, name: str) -> float:
        """Position of a 1-dof joint ("drawer", "button", "knob", "finger_1", ...)."""
        return float(self.data.qpos[self.model.jnt_qposadr[self._joint_id(name)]])

    def touching_gripper(self, name: str) -> bool:
        """Whether any geom of body ``name`` touches the fingers or palm."""
        d = self.data
        if d.ncon == 0:
            return False
        bid = self._body_id(name)
        geoms = d.contact.geom[: d.ncon]
        body_of = self.model.geom_bodyid[geoms]
        grip = np.isin(geoms, self._gripper_geoms)
        return bool(
            np.any((body_of[:, 0] == bid) & grip[:, 1] | (body_of[:, 1] == bid) & grip[:, 0])
        )

    def set_object_pose(self, name: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Put an object at ``pos`` ``[3]`` with heading ``yaw``, at rest; recompute the state."""
        self._write_object_pose(self._check_object(name), np.asarray(pos, float), yaw_quat(yaw))
        mujoco.mj_forward(self.model, self.data)

    def set_joint_value(self, name: str, value: float) -> None:
        """Set a 1-dof joint (drawer, button, knob) at rest; recompute the state."""
        jid = self._joint_id(name)
        self.data.qpos[self.model.jnt_qposadr[jid]] = value
        self.data.qvel[self.model.jnt_dofadr[jid]] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def set_gripper(self, tcp: np.ndarray, yaw: float = 0.0, opening: float = FINGER_OPEN) -> None:
        """Teleport the gripper: TCP at ``tcp`` ``[3]``, pointing down, heading ``yaw``."""
        self._teleport_gripper(np.asarray(tcp, float), quat_mul(yaw_quat(yaw), DOWN_QUAT), opening)
        mujoco.mj_forward(self.model, self.data)

    def _teleport_gripper(self, tcp: np.ndarray, quat: np.ndarray, opening: float) -> None:
        d = self.data
        body = tcp - _approach_axis(quat) * TCP_OFFSET
        d.mocap_pos[0], d.mocap_quat[0] = body, quat
        adr, dof = self._gripper_adr, self._gripper_dof
        d.qpos[adr : adr + 3], d.qpos[adr + 3 : adr + 7] = body, quat
        d.qvel[dof : dof + 6] = 0.0
        d.qpos[self._finger_adr] = (opening, -opening)
        d.ctrl[:] = (opening, -opening)

    def _write_object_pose(self, name: str, pos: np.ndarray, quat: np.ndarray) -> None:
        jid = self.model.joint(name).id
        adr, dof = self.model.jnt_qposadr[jid], self.model.jnt_dofadr[jid]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = quat
        self.data.qvel[dof : dof + 6] = 0.0

    def _check_object(self, name: str) -> str:
        self.object_kind(name)
        return name

    def _body_id(self, name: str) -> int:
        if name not in self._body_ids:
            raise unknown_choice("body", name, self._body_ids)
        return self._body_ids[name]

    def _joint_id(self, name: str) -> int:
        if name not in self._joint_ids:
            raise unknown_choice("joint", name, self._joint_ids)
        return self._joint_ids[name]


def finger_opening(grip: float) -> float:
    """Finger joint travel (m, 0 closed .. FINGER_OPEN) that gripper action ``grip`` in
    [-1, 1] commands: -1 fully open, +1 closed."""
    return float(FINGER_OPEN * (1.0 - grip) / 2.0)


def _approach_axis(quat: np.ndarray) -> np.ndarray:
    """World direction ``[3]`` of the gripper's z axis (palm to fingertips) for ``quat`` ``[4]``."""
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)[:, 2]
