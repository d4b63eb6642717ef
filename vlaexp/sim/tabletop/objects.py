"""Movable objects built from MuJoCo primitives, and the colours the scenes use.

Every object is one free body whose origin sits at its centre; ``rest_z`` is the height of
that origin above a flat support when the object rests upright. Lengths are metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Part:
    """One primitive geom of an object, in the object's body frame (MJCF ``size`` semantics)."""

    type: str  # box | cylinder | sphere | capsule
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    euler: tuple[float, float, float] = (0.0, 0.0, 0.0)  # degrees, MJCF xyz convention


@dataclass(frozen=True)
class ObjectKind:
    """The shape of a graspable object and how the expert grasps it."""

    noun: str  # as it reads in instructions: "cube", "cylinder", ...
    parts: tuple[Part, ...]
    rest_z: float  # body-origin height above the support when resting
    footprint: float  # radius of a circle covering the object seen from above (layout spacing)
    yaw_period: float  # grasp symmetry about z: pi/2 square, pi elongated, 0 round
    rolls: bool = False  # round objects get rolling friction so they come to rest


_HALF_PI = float(np.pi / 2)
_PI = float(np.pi)

CUBE = ObjectKind("cube", (Part("box", (0.02, 0.02, 0.02)),), 0.02, 0.03, _HALF_PI)
CYLINDER = ObjectKind("cylinder", (Part("cylinder", (0.02, 0.025)),), 0.025, 0.022, 0.0)
BALL = ObjectKind("ball", (Part("sphere", (0.022,)),), 0.022, 0.024, 0.0, rolls=True)
# Lying along y: the fingers (closing along x) squeeze it across its round side.
CAPSULE = ObjectKind(
    "capsule", (Part("capsule", (0.018, 0.025), euler=(90, 0, 0)),), 0.018, 0.045, _PI, rolls=True
)
BLOCK = ObjectKind("block", (Part("box", (0.015, 0.03, 0.015)),), 0.015, 0.035, _PI)
CAN = ObjectKind("can", (Part("cylinder", (0.024, 0.035)),), 0.035, 0.026, 0.0)
BAR = ObjectKind("bar", (Part("box", (0.01, 0.05, 0.012)),), 0.012, 0.052, _PI)
PUCK = ObjectKind("puck", (Part("cylinder", (0.026, 0.012)),), 0.012, 0.028, 0.0)
MUG = ObjectKind(
    "mug",
    (
        Part("cylinder", (0.022, 0.024)),
        Part("box", (0.004, 0.012, 0.014), pos=(0.0, -0.03, 0.0)),
        Part("box", (0.004, 0.008, 0.003), pos=(0.0, -0.025, 0.013)),
        Part("box", (0.004, 0.008, 0.003), pos=(0.0, -0.025, -0.013)),
    ),
    0.024,
    0.036,
    _PI,
)
BRICK = ObjectKind(
    "brick",
    (
        Part("box", (0.018, 0.036, 0.014)),
        Part("cylinder", (0.008, 0.004), pos=(0.0, -0.018, 0.018)),
        Part("cylinder", (0.008, 0.004), pos=(0.0, 0.018, 0.018)),
    ),
    0.014,
    0.04,
    _PI,
)

OBJECT_KINDS: dict[str, ObjectKind] = {
    k.noun: k for k in (CUBE, CYLINDER, BALL, CAPSULE, BLOCK, CAN, BAR, PUCK, MUG, BRICK)
}

# Named colours (RGBA) for instructions like "the red cube".
COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.1, 1.0),
    "blue": (0.12, 0.3, 0.85, 1.0),
    "green": (0.15, 0.7, 0.2, 1.0),
    "yellow": (0.95, 0.8, 0.1, 1.0),
    "orange": (0.95, 0.5, 0.1, 1.0),
    "purple": (0.55, 0.2, 0.75, 1.0),
    "teal": (0.1, 0.65, 0.65, 1.0),
    "pink": (0.95, 0.45, 0.65, 1.0),
    "white": (0.92, 0.92, 0.9, 1.0),
    "brown": (0.55, 0.35, 0.2, 1.0),
    "grey": (0.5, 0.5, 0.52, 1.0),
}


@dataclass(frozen=True)
class SceneObject:
    """A movable object instance in a scene: body name ``<color>_<noun>[_<tag>]``."""

    kind: ObjectKind
    color: str
    tag: str = ""  # tells look-alikes apart: "red_cube_a", "red_cube_b"

    @property
    def name(self) -> str:
        base = f"{self.color}_{self.kind.noun}"
        return f"{base}_{self.tag}" if self.tag else base
