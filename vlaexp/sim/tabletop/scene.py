"""MJCF of a tabletop scene from primitives: table, floating gripper, objects, fixtures,
cameras and lights, tuned for fast headless rendering (no shadows, reflections or MSAA).

World frame: the table top is the plane z = 0; +x is right and +y is away from the agentview
camera, which looks at the table from the front. Lengths are metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlaexp.sim.tabletop.fixtures import (
    FIXTURE_COLORS,
    FIXTURE_EXCLUDES,
    FIXTURE_MATERIALS,
    fixture_body_xml,
)
from vlaexp.sim.tabletop.objects import COLORS, ObjectKind, SceneObject

TIMESTEP = 0.002  # physics step, s; 25 substeps per 20 Hz control step

# Gripper geometry, in the gripper body frame whose +z axis points from palm to fingertips.
FINGER_OPEN = 0.04  # finger joint travel: 0 closed, 0.04 open (gap 8 cm)
TCP_OFFSET = 0.06  # tool centre point below the palm centre, along the approach axis
FINGERTIP_BELOW_TCP = 0.015
FINGER_HALF = (0.006, 0.012, 0.03)
FINGER_FORCE = 15.0  # N per finger when squeezing
FINGER_KP = 1500.0  # N/m: a finger stopped 1 cm short of closed already pushes FINGER_FORCE
# N s/m: caps the closing speed near FINGER_FORCE / FINGER_DAMPING = 0.15 m/s, so a finger
# never tunnels through a thin object within one physics step.
FINGER_DAMPING = 100.0

# Tool-centre-point workspace the controller keeps the gripper in.
WORKSPACE_LOW = np.array([-0.4, -0.34, 0.013])
WORKSPACE_HIGH = np.array([0.4, 0.38, 0.45])
HOME_TCP = np.array([0.0, 0.0, 0.28])
DOWN_QUAT = np.array([0.0, 1.0, 0.0, 0.0])  # approach axis pointing at the table, yaw 0

AGENTVIEW_POS = np.array([0.0, -0.52, 0.62])
AGENTVIEW_TARGET = np.array([0.0, 0.03, 0.0])
AGENTVIEW_FOVY = 50.0
WRIST_FOVY = 75.0

TABLE_RGBA = (0.72, 0.62, 0.5, 1.0)
# Pre-built table textures the table-texture perturbation picks from: (builtin, rgb1, rgb2).
TABLE_TEXTURES = (
    ("checker", (0.8, 0.8, 0.8), (0.45, 0.45, 0.45)),
    ("checker", (0.6, 0.45, 0.3), (0.35, 0.25, 0.18)),
    ("random", (0.7, 0.7, 0.68), (0.2, 0.2, 0.2)),
    ("random", (0.55, 0.6, 0.7), (0.9, 0.9, 0.9)),
)


@dataclass(frozen=True)
class SceneSpec:
    """What a scene contains; positions are set at reset, not here."""

    objects: tuple[SceneObject, ...]
    fixtures: tuple[str, ...]
    distractors: tuple[ObjectKind, ...] = ()  # bodies "distractor_<i>"
    table_textures: bool = False  # build the textured table materials
    object_textures: bool = False  # build a textured twin of every object material


def _fmt(values) -> str:
    return " ".join(f"{float(v):.5g}" for v in values)


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """MJCF ``xyaxes`` ``[6]`` of a camera at ``pos`` ``[3]`` looking at ``target`` ``[3]``."""
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    return np.concatenate([right, cam_up])


def _object_body(name: str, kind: ObjectKind, material: str) -> str:
    contact = 'condim="6" friction="1 0.005 0.001"' if kind.rolls else 'condim="4"'
    geoms = "".join(
        f'<geom type="{p.type}" size="{_fmt(p.size)}" pos="{_fmt(p.pos)}" '
        f'euler="{_fmt(p.euler)}" material="{material}" {contact}/>'
        for p in kind.parts
    )
    return f'<body name="{name}" pos="0 0 {kind.rest_z}"><freejoint name="{name}"/>{geoms}</body>'


def _material(name: str, rgba, extra: str = "") -> str:
    return f'<material name="{name}" rgba="{_fmt(rgba)}" specular="0.15" shininess="0.2" {extra}/>'


def _gripper_xml() -> str:
    fx, fy, fz = FINGER_HALF
    finger_z = TCP_OFFSET + FINGERTIP_BELOW_TCP - fz
    # The wrist camera sits on the palm's -y side (away from the agentview camera) and looks
    # past the fingertips, which show at the bottom of its image.
    cam_pos = np.array([0.0, -0.06, -0.02])
    cam_axes = look_at_xyaxes(
        cam_pos, np.array([0.0, 0.0, TCP_OFFSET + 0.12]), np.array([0.0, -1.0, 0.0])
    )
    home = HOME_TCP + np.array([0.0, 0.0, TCP_OFFSET])  # palm above the tool centre point
    finger_contact = 'condim="4" friction="2 0.05 0.001" solref="0.01 1" solimp="0.95 0.99 0.001"'
    fingers = "".join(
        f'<body name="finger_{i}" pos="{sign * fx:.4f} 0 {finger_z:.4f}" gravcomp="1">'
        f'<joint name="finger_{i}" type="slide" axis="1 0 0" range="{rng}" '
        f'damping="{FINGER_DAMPING}" armature="0.01"/>'
        f'<geom name="finger_{i}" type="box" size="{fx} {fy} {fz}" mass="0.05" '
        f'material="finger_mat" {finger_contact}/>'
        "</body>"
        for i, sign, rng in ((1, 1, f"0 {FINGER_OPEN}"), (2, -1, f"-{FINGER_OPEN} 0"))
    )
    return (
        f'<body name="gripper_target" mocap="true" pos="{_fmt(home)}" quat="{_fmt(DOWN_QUAT)}"/>'
        f'<body name="gripper" pos="{_fmt(home)}" quat="{_fmt(DOWN_QUAT)}" gravcomp="1">'
        '<freejoint name="gripper"/>'
        '<inertial pos="0 0 0" mass="0.5" diaginertia="0.002 0.002 0.002"/>'
        '<geom name="palm" type="box" size="0.045 0.014 0.015" material="gripper_mat"/>'
        '<geom name="wrist_link" type="cylinder" size="0.022 0.045" pos="0 0 -0.06" '
        'material="gripper_mat" contype="0" conaffinity="0"/>'
        f'<site name="tcp" pos="0 0 {TCP_OFFSET}" size="0.004" group="5"/>'
        f'<camera name="wrist" pos="{_fmt(cam_pos)}" xyaxes="{_fmt(cam_axes)}" '
        f'fovy="{WRIST_FOVY}"/>'
        f"{fingers}</body>"
    )


def build_scene_xml(spec: SceneSpec, resolution: int) -> str:
    """The MJCF string of ``spec`` with an offscreen buffer of ``resolution`` squared pixels."""
    materials = [
        _material("table_mat", TABLE_RGBA),
        _material("floor_mat", (0.32, 0.33, 0.35, 1.0)),
        _material("gripper_mat", (0.82, 0.82, 0.84, 1.0)),
        _material("finger_mat", (0.2, 0.2, 0.22, 1.0)),
        _material("white_mat", (0.95, 0.95, 0.95, 1.0)),
    ]
    textures = []
    if spec.table_textures:
        for i, (builtin, rgb1, rgb2) in enumerate(TABLE_TEXTURES):
            mark = 'mark="random" random="0.25"' if builtin == "random" else ""
            kind = "flat" if builtin == "random" else "checker"
            textures.append(
                f'<texture name="table_tex_{i}" type="2d" builtin="{kind}" width="64" '
                f'height="64" rgb1="{_fmt(rgb1)}" rgb2="{_fmt(rgb2)}" {mark}/>'
            )
            materials.append(
                _material(
                    f"table_tex_{i}_mat",
                    (1, 1, 1, 1),
                    f'texture="table_tex_{i}" texrepeat="6 6" texuniform="true"',
                )
            )
    if spec.object_textures:
        textures.append(
            '<texture name="object_tex" type="2d" builtin="checker" width="32" height="32" '
            'rgb1="1 1 1" rgb2="0.55 0.55 0.55"/>'
        )
    bodies = []
    movable = [(o.name, o.kind, COLORS[o.color]) for o in spec.objects]
    movable += [(f"distractor_{i}", k, COLORS["grey"]) for i, k in enumerate(spec.distractors)]
    for name, kind, rgba in movable:
        materials.append(_material(f"{name}_mat", rgba))
        if spec.object_textures:
            materials.append(
                _material(
                    f"{name}_tex_mat",
                    rgba,
                    'texture="object_tex" texrepeat="40 40" texuniform="true"',
                )
            )
        bodies.append(_object_body(name, kind, f"{name}_mat"))
    excludes = ['<exclude body1="finger_1" body2="finger_2"/>']
    for fixture in spec.fixtures:
        for mat in FIXTURE_MATERIALS[fixture]:
            materials.append(_material(f"{mat}_mat", FIXTURE_COLORS[mat]))
        bodies.append(fixture_body_xml(fixture))
        excludes += [
            f'<exclude body1="{a}" body2="{b}"/>' for a, b in FIXTURE_EXCLUDES.get(fixture, ())
        ]
    agent_axes = look_at_xyaxes(AGENTVIEW_POS, AGENTVIEW_TARGET, np.array([0.0, 0.0, 1.0]))
    return f"""<mujoco model="tabletop">
  <compiler angle="degree" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <statistic extent="1" center="0 0 0.1"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{resolution}" offheight="{resolution}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>{"".join(textures)}{"".join(materials)}</asset>
  <worldbody>
    <light name="key" directional="true" pos="0 -0.4 1.5" dir="0.15 0.35 -1" castshadow="false"
      diffuse="0.55 0.55 0.55" specular="0.05 0.05 0.05"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor_mat"/>
    <geom name="table" type="box" size="0.45 0.35 0.02" pos="0 0.03 -0.02" material="table_mat"/>
    <camera name="agentview" pos="{_fmt(AGENTVIEW_POS)}" xyaxes="{_fmt(agent_axes)}"
      fovy="{AGENTVIEW_FOVY}"/>
    {_gripper_xml()}
    {"".join(bodies)}
  </worldbody>
  <contact>{"".join(excludes)}</contact>
  <equality>
    <weld body1="gripper_target" body2="gripper" solref="0.01 1" relpose="0 0 0 1 0 0 0"/>
  </equality>
  <actuator>
    <position name="finger_1" joint="finger_1" kp="{FINGER_KP}" ctrlrange="0 {FINGER_OPEN}"
      forcerange="-{FINGER_FORCE} {FINGER_FORCE}"/>
    <position name="finger_2" joint="finger_2" kp="{FINGER_KP}" ctrlrange="-{FINGER_OPEN} 0"
      forcerange="-{FINGER_FORCE} {FINGER_FORCE}"/>
  </actuator>
</mujoco>
"""
