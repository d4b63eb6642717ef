"""The robosuite tasks vlaexp runs: what each one moves, where it goes, what it is called.

Each robosuite env is one task (task id 0 of its suite). A task names its target object (the
one the instruction is about and the scripted expert grasps) and, for pick-and-place tasks,
a :class:`Placement` computed from the live simulator state: where the target's body origin
must end up. ``wrong_target`` names the object and place the expert's ``wrong_target`` fault
uses instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Placement:
    """A goal region for an object's body origin.

    ``centre`` float[3] is where the origin rests when placed; the region spans
    ``half_extent`` float[2] either side of the centre in x and y.
    """

    centre: np.ndarray
    half_extent: np.ndarray

    def aim(self, toward: np.ndarray, margin: float) -> np.ndarray:
        """float[3]: the point of the region nearest ``toward`` float[2+], ``margin`` inside
        its edges (the centre when the region is narrower than that), at resting height."""
        slack = np.maximum(self.half_extent - margin, 0.0)
        xy = np.clip(np.asarray(toward)[:2], self.centre[:2] - slack, self.centre[:2] + slack)
        return np.array([xy[0], xy[1], self.centre[2]])


# (robosuite env, target object name) -> Placement
PlacementFn = Callable[[Any, str], Placement]


def _body_pos(raw: Any, obj_name: str) -> np.ndarray:
    obj = _object(raw, obj_name)
    return np.array(raw.sim.data.body_xpos[raw.sim.model.body_name2id(obj.root_body)])


def _object(raw: Any, name: str) -> Any:
    for obj in raw.model.mujoco_objects:
        if obj.name == name:
            return obj
    names = [o.name for o in raw.model.mujoco_objects]
    raise KeyError(f"no object '{name}' in the robosuite scene; it has {', '.join(names)}")


def z_extent(raw: Any, name: str) -> tuple[float, float]:
    """(bottom, top): heights of object ``name``'s collision geometry relative to its origin.

    Read from the compiled model rather than robosuite's ``bottom_offset``, which for the can
    is 2 cm off its collision mesh. Assumes geoms aligned with their body, as in these tasks.
    """
    model = raw.sim.model._model
    ids = [model.geom(g).id for g in _object(raw, name).contact_geoms]
    centre = model.geom_pos[ids, 2] + model.geom_aabb[ids, 2]
    half = model.geom_aabb[ids, 5]
    return float(np.min(centre - half)), float(np.max(centre + half))


def on_top_of(support: str) -> PlacementFn:
    """The held object resting centred on ``support`` (a box), within its top face."""

    def placement(raw: Any, held: str) -> Placement:
        top = _body_pos(raw, support)[2] + z_extent(raw, support)[1]
        centre = _body_pos(raw, support)
        centre[2] = top - z_extent(raw, held)[0]
        half = np.full(2, float(_object(raw, support).horizontal_radius) / np.sqrt(2))
        return Placement(centre=centre, half_extent=half)  # half: the box's half side

    return placement


# robosuite's bins_arena.xml: each bin's floor is a box 2 cm half-thick centred on the bin's origin.
_BIN_FLOOR_HALF_THICKNESS = 0.02


def in_bin(bin_index: int) -> PlacementFn:
    """The held object standing in bin ``bin_index`` of PickPlace's target bins.

    The region is the quarter of the bin robosuite's success check accepts.
    """

    def placement(raw: Any, held: str) -> Placement:
        centre = np.array(raw.target_bin_placements[bin_index])  # at the bin's origin height
        centre[2] += _BIN_FLOOR_HALF_THICKNESS - z_extent(raw, held)[0]  # standing on the floor
        return Placement(centre=centre, half_extent=np.asarray(raw.bin_size[:2]) / 4.0)

    return placement


@dataclass(frozen=True)
class RobosuiteTask:
    """One robosuite env as a vlaexp task.

    Attributes:
        env_name: robosuite's registered env class.
        instruction: the language instruction.
        target: the object the task is about and the expert grasps.
        placement: where ``target`` goes; None for tasks that only lift it.
        scene_objects: objects whose colours the ``object_colors`` perturbation changes.
        table_bodies: bodies whose visual geoms the ``table_texture`` perturbation recolours.
        grasp_periods: yaw symmetry of each graspable object (pi/2 for a cube; None: round).
        wrong_target: (object, placement) the ``wrong_target`` fault uses; None if the task
            has no other object or place to confuse.
    """

    env_name: str
    instruction: str
    target: str
    placement: PlacementFn | None
    scene_objects: tuple[str, ...]
    table_bodies: tuple[str, ...]
    grasp_periods: dict[str, float | None]
    wrong_target: tuple[str, PlacementFn] | None


TASKS: dict[str, RobosuiteTask] = {
    "Lift": RobosuiteTask(
        env_name="Lift",
        instruction="lift the red cube",
        target="cube",
        placement=None,
        scene_objects=("cube",),
        table_bodies=("table",),
        grasp_periods={"cube": np.pi / 2},
        wrong_target=None,
    ),
    "Stack": RobosuiteTask(
        env_name="Stack",
        instruction="stack the red cube on the green cube",
        target="cubeA",
        placement=on_top_of("cubeB"),
        scene_objects=("cubeA", "cubeB"),
        table_bodies=("table",),
        grasp_periods={"cubeA": np.pi / 2, "cubeB": np.pi / 2},
        wrong_target=("cubeB", on_top_of("cubeA")),
    ),
    "PickPlaceCan": RobosuiteTask(
        env_name="PickPlaceCan",
        instruction="pick up the can and place it in its bin",
        target="Can",
        placement=in_bin(3),  # robosuite's bin for the can (milk 0, bread 1, cereal 2, can 3)
        scene_objects=("Can",),
        table_bodies=("bin1", "bin2"),
        grasp_periods={"Can": None},
        wrong_target=("Can", in_bin(0)),
    ),
}
ENV_NAMES = tuple(TASKS)
# Horizons of conf/task_suite/robosuite_*.yaml: about 2.5x the expert's longest success.
DEFAULT_MAX_STEPS = {"Lift": 200, "Stack": 300, "PickPlaceCan": 400}
