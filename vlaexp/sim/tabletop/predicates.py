"""Success predicates: geometric tests on the simulator state, evaluated after every step.

A placed object counts only once the gripper has let go of it (no contact with the fingers or
palm), so "on the plate" means resting there, not being held above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vlaexp.sim.tabletop import fixtures as fx

if TYPE_CHECKING:
    from vlaexp.sim.tabletop.env import TabletopEnv

DRAWER_OPEN_AT = 0.1  # of fx.DRAWER_TRAVEL = 0.13
BUTTON_PRESSED_AT = -0.01  # of -fx.BUTTON_TRAVEL = -0.014
KNOB_TURNED_AT = 1.0  # rad, counter-clockwise seen from above
Z_TOL = 0.006  # an object released this far above its resting height already counts


class Goal(Protocol):
    """One condition of a task; a task succeeds when all its goals hold at once."""

    def holds(self, env: TabletopEnv) -> bool: ...


def _xy_dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:2] - b[:2]))


@dataclass(frozen=True)
class OnPlate:
    obj: str

    def holds(self, env: TabletopEnv) -> bool:
        pos = env.object_pos(self.obj)
        rest = env.object_kind(self.obj).rest_z
        return (
            _xy_dist(pos, env.body_pos("plate")) < fx.PLATE_RADIUS - 0.01
            and fx.PLATE_TOP < pos[2] < fx.PLATE_TOP + rest + Z_TOL
            and not env.touching_gripper(self.obj)
        )


@dataclass(frozen=True)
class InBowl:
    obj: str

    def holds(self, env: TabletopEnv) -> bool:
        pos = env.object_pos(self.obj)
        return (
            _xy_dist(pos, env.body_pos("bowl")) < fx.BOWL_INNER_RADIUS - 0.01
            and fx.BOWL_FLOOR < pos[2] < fx.BOWL_RIM
            and not env.touching_gripper(self.obj)
        )


@dataclass(frozen=True)
class InBasket:
    obj: str

    def holds(self, env: TabletopEnv) -> bool:
        pos = env.object_pos(self.obj)
        d = np.abs(pos[:2] - env.body_pos("basket")[:2])
        return (
            bool(np.all(d < fx.BASKET_INNER_HALF - 0.01))
            and fx.BASKET_FLOOR < pos[2] < fx.BASKET_RIM
            and not env.touching_gripper(self.obj)
        )


@dataclass(frozen=True)
class InDrawer:
    obj: str

    def holds(self, env: TabletopEnv) -> bool:
        # In the drawer's own frame, which slides with it.
        local = env.body_pos(self.obj, frame="drawer")
        y0, y1 = fx.DRAWER_INNER_Y
        return (
            abs(local[0]) < fx.DRAWER_INNER_HALF_X - 0.005
            and y0 + 0.005 < local[1] < y1 - 0.005
            and fx.DRAWER_FLOOR < local[2] < fx.DRAWER_RIM
            and not env.touching_gripper(self.obj)
        )


@dataclass(frozen=True)
class Stacked:
    """``top`` rests on ``bottom``, which stands on the table."""

    top: str
    bottom: str

    def holds(self, env: TabletopEnv) -> bool:
        top, bottom = env.object_pos(self.top), env.object_pos(self.bottom)
        top_rest = env.object_kind(self.top).rest_z
        bottom_rest = env.object_kind(self.bottom).rest_z
        dz = top[2] - bottom[2]
        return (
            _xy_dist(top, bottom) < 0.02
            and top_rest + bottom_rest - 0.01 < dz < top_rest + bottom_rest + Z_TOL
            and bottom[2] < bottom_rest + 0.005
            and not env.touching_gripper(self.top)
        )


@dataclass(frozen=True)
class InTargetSquare:
    """The object's centre is over the green square and it stands on the table."""

    obj: str

    def holds(self, env: TabletopEnv) -> bool:
        pos = env.object_pos(self.obj)
        d = np.abs(pos[:2] - env.body_pos("target")[:2])
        return (
            bool(np.all(d < fx.TARGET_HALF)) and pos[2] < env.object_kind(self.obj).rest_z + 0.005
        )


@dataclass(frozen=True)
class DrawerOpen:
    def holds(self, env: TabletopEnv) -> bool:
        return env.joint_value("drawer") >= DRAWER_OPEN_AT


@dataclass(frozen=True)
class ButtonPressed:
    def holds(self, env: TabletopEnv) -> bool:
        return env.joint_value("button") <= BUTTON_PRESSED_AT


@dataclass(frozen=True)
class KnobTurned:
    def holds(self, env: TabletopEnv) -> bool:
        return env.joint_value("knob") >= KNOB_TURNED_AT
