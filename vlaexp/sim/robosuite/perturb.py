"""Out-of-distribution scene changes for robosuite scenes, and which perturbations we honour.

Scene perturbations edit the loaded ``MjModel`` in place at every reset (robosuite keeps one
model per env), drawn from the episode's seed: object and table colours (geom rgba, with the
texture material removed so the colour shows), light intensity and direction, and the pose
of the agentview camera. Expert faults are the scripted expert's business (``expert.py``).
``distractors`` would need new objects in robosuite's fixed models, so it is refused.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.errors import ConfigError
from vlaexp.sim.robosuite.tasks import RobosuiteTask

SCENE_PERTURBATIONS = ("object_colors", "table_texture", "lighting", "camera_jitter")
EXPERT_FAULTS = ("action_noise", "early_release", "wrong_target", "freeze", "fault_prob")
_VISUAL_GROUP = 1  # robosuite's visual geoms; group 0 holds collision geoms


def check_perturbation(p: PerturbationConfig, task: RobosuiteTask) -> None:
    """Raise :class:`ConfigError` for any switched-on perturbation ``task`` cannot honour."""
    supported = SCENE_PERTURBATIONS + EXPERT_FAULTS
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        default = f.default_factory() if callable(f.default_factory) else f.default
        if value == default:
            continue
        if f.name not in supported:
            raise ConfigError(
                f"perturbation.{f.name}={value!r} is not supported by the robosuite suites; "
                f"leave it at {default!r} or use one they honour: {', '.join(supported)}"
            )
        if f.name == "wrong_target" and task.wrong_target is None:
            raise ConfigError(
                f"perturbation.wrong_target is not possible in robosuite {task.env_name}: the "
                "task has no other object or place to confuse (it is possible in Stack and "
                "PickPlaceCan)"
            )
    for name in ("lighting", "camera_jitter", "action_noise"):
        if getattr(p, name) < 0:
            raise ConfigError(f"perturbation.{name}={getattr(p, name)} must be >= 0")


class ScenePerturber:
    """Applies the switched-on scene perturbations of ``p`` to ``model`` at each reset.

    Args:
        model: the robosuite scene's ``MjModel``, edited in place.
        task: names the task's objects and table bodies.
        object_geoms: visual geom ids of each of ``task.scene_objects``.
        p: which perturbations are on and how strong.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        task: RobosuiteTask,
        object_geoms: list[list[int]],
        p: PerturbationConfig,
    ) -> None:
        self.model = model
        self.p = p
        self._object_geoms = [np.asarray(g, dtype=int) for g in object_geoms]
        table_ids = [model.body(b).id for b in task.table_bodies]
        self._table_geoms = np.flatnonzero(
            np.isin(model.geom_bodyid, table_ids) & (model.geom_group == _VISUAL_GROUP)
        )
        self._camera = model.camera("agentview").id
        self._cam_pos = model.cam_pos[self._camera].copy()
        self._cam_quat = model.cam_quat[self._camera].copy()
        self._light_diffuse = model.light_diffuse.copy()
        self._light_dir = model.light_dir.copy()

    def apply(self, rng: np.random.Generator) -> None:
        """Draw this episode's perturbations from ``rng`` and write them into the model."""
        m, p = self.model, self.p
        if p.object_colors:
            for geoms in self._object_geoms:
                _paint(m, geoms, rng.uniform(0.05, 1.0, 3))
        if p.table_texture:
            _paint(m, self._table_geoms, rng.uniform(0.1, 0.9, 3))
        if p.lighting > 0:
            scale = 1.0 + rng.uniform(-p.lighting, p.lighting, (m.nlight, 1))
            m.light_diffuse[:] = np.clip(self._light_diffuse * scale, 0.0, 1.0)
            direction = self._light_dir + rng.uniform(-p.lighting, p.lighting, (m.nlight, 3))
            m.light_dir[:] = direction / np.linalg.norm(direction, axis=1, keepdims=True)
        if p.camera_jitter > 0:
            j = p.camera_jitter
            m.cam_pos[self._camera] = self._cam_pos + rng.uniform(-j, j, 3)
            turn = np.zeros(4)
            mujoco.mju_axisAngle2Quat(turn, *_axis_angle(rng.uniform(-j, j, 3)))
            quat = np.zeros(4)
            mujoco.mju_mulQuat(quat, turn, self._cam_quat)
            m.cam_quat[self._camera] = quat


def _paint(model: mujoco.MjModel, geoms: np.ndarray, rgb: np.ndarray) -> None:
    """Give ``geoms`` the colour ``rgb`` float[3]; a texture material would hide it."""
    model.geom_matid[geoms] = -1
    model.geom_rgba[geoms, :3] = rgb
    model.geom_rgba[geoms, 3] = 1.0


def _axis_angle(rotvec: np.ndarray) -> tuple[np.ndarray, float]:
    """``(unit axis float[3], angle)`` of a rotation vector float[3] (any axis for zero)."""
    angle = float(np.linalg.norm(rotvec))
    return (rotvec / angle if angle > 0 else np.array([0.0, 0.0, 1.0])), angle
