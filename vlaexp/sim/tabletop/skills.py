"""The scripted expert's skills: closed-loop waypoint controllers on privileged state.

A task's plan is a tuple of skill descriptors (``PickPlace``, ``Push``, ``OpenDrawer``,
``PressButton``, ``TurnKnob``). ``skill.run(env)`` is a generator that reads the simulator
state each step and yields one :class:`Command` (a float32[7] action plus the phase it serves)
until the skill is done. Waypoints are recomputed every step from where things are now, so a
nudged object is still grasped; a missed grasp or pull is retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vlaexp.sim.tabletop import fixtures as fx
from vlaexp.sim.tabletop.env import POS_SCALE, ROT_SCALE, finger_opening
from vlaexp.sim.tabletop.rotations import quat_mul, rotation_error, wrap_angle, yaw_quat
from vlaexp.sim.tabletop.scene import DOWN_QUAT, FINGERTIP_BELOW_TCP

if TYPE_CHECKING:
    from vlaexp.sim.tabletop.env import TabletopEnv

OPEN, CLOSE = -1.0, 1.0
Z_TRANSIT = 0.2  # TCP height for moves across the table: clears every fixture
GRASP_Z_MIN = FINGERTIP_BELOW_TCP + 0.002  # fingertips 2 mm above the table
FAST, SLOW, FINE = 0.025, 0.015, 0.008  # metres per control step
TURN_RATE = 0.12  # rad per control step
RELEASE_GAP = 0.01  # an object is let go this far above where it will rest
DRAWER_PULL_TO = 0.125
KNOB_TURN = 1.35
FINGERS_SETTLED = 5e-4  # m per step: fingers moving less than this have stopped
FINGERS_AT_TARGET = 2e-3  # m: fingers this close to the commanded opening are there
MIN_HOLD = 2  # steps a hold lasts at least (the fingers start moving after the first)


@dataclass(frozen=True)
class Command:
    """One expert step: ``action`` float32[7]; ``phase`` names the waypoint being served;
    ``progress`` in [0, 1] is how much of a held motion (carry, pull, turn) is done."""

    action: np.ndarray
    phase: str
    progress: float = 0.0


# Every phase name a Command carries (the expert's `phase`; `data.collect.action_noise_phases`
# is checked against it)
PHASES = (
    "approach",
    "descend",
    "grasp",
    "lift",
    "carry",
    "lower",
    "release",
    "regrasp",
    "retreat",
    "back_off",
    "push",
    "pull",
    "press",
    "turn",
    "early_release",
)


class Skill(Protocol):
    holds_object: bool  # has a phase where letting go spoils the skill (early-release target)
    freeze_phases: tuple[str, ...]  # phases at whose start freezing leaves the goal unmet

    def run(self, env: TabletopEnv) -> Iterator[Command]: ...


def _action(
    env: TabletopEnv, target: np.ndarray, yaw: float, grip: float, speed: float
) -> np.ndarray:
    """Action float32[7] moving the TCP toward ``target`` ``[3]`` at most ``speed`` m per step
    and turning the gripper (pointing down) toward heading ``yaw``."""
    step = target - env.tcp_pos()
    dist = float(np.linalg.norm(step))
    if dist > speed:
        step *= speed / dist
    rot = rotation_error(quat_mul(yaw_quat(yaw), DOWN_QUAT), env.gripper_quat())
    angle = float(np.linalg.norm(rot))
    if angle > TURN_RATE:
        rot *= TURN_RATE / angle
    action = np.concatenate([step / POS_SCALE, rot / ROT_SCALE, [grip]])
    return np.clip(action, -1.0, 1.0).astype(np.float32)


Target = Callable[[], np.ndarray] | np.ndarray  # a fixed point [3] or one recomputed per step


def _move(
    env: TabletopEnv,
    target: Target,
    yaw: float,
    grip: float,
    phase: str,
    speed: float,
    tol: float = 0.005,
    max_steps: int = 80,
) -> Iterator[Command]:
    """Yield commands until the TCP is within ``tol`` of ``target`` with the yaw matched."""
    for _ in range(max_steps):
        goal = target() if callable(target) else target
        yaw_err = abs(wrap_angle(yaw - env.gripper_yaw()))
        if np.linalg.norm(goal - env.tcp_pos()) < tol and yaw_err < 0.05:
            return
        yield Command(_action(env, goal, yaw, grip, speed), phase)


def _over(env: TabletopEnv, body: str, z: float) -> Target:
    """The point above ``body``'s current position at height ``z``, tracked every step."""
    return lambda: np.array([*env.body_pos(body)[:2], z])


def hold(env: TabletopEnv, grip: float, steps: int, phase: str) -> Iterator[Command]:
    """Stay where the TCP is while the fingers move to ``grip``, until they stop (closed on
    the object, or fully open), at most ``steps`` steps.

    The hold ends on what a policy sees (the finger joints are in the state), not after a
    fixed count: with a count, the fingers rest closed on the object for a few steps that
    look alike, and a policy imitating the demos cannot tell when to lift; trained on such
    demos it hovered with the object in hand, replaying "wait, then lift" chunk after chunk."""
    here = env.tcp_pos().copy()
    yaw = env.gripper_yaw()
    last = None
    for i in range(steps):
        fingers = env.finger_qpos()
        if i >= MIN_HOLD and fingers_done(fingers, last, grip):
            return
        last = fingers
        yield Command(_action(env, here, yaw, grip, FINE), phase)


def fingers_done(fingers: np.ndarray, last: np.ndarray, grip: float) -> bool:
    """Whether fingers ``[2]`` (joint positions, ``last`` one step earlier) have stopped or
    reached the opening that ``grip`` commands (they slow down near it)."""
    stopped = np.max(np.abs(fingers - last)) < FINGERS_SETTLED
    return bool(stopped or abs(abs(fingers[0]) - finger_opening(grip)) < FINGERS_AT_TARGET)


def retreat(env: TabletopEnv, grip: float) -> Iterator[Command]:
    """Straight up to the transit height."""
    up = np.array([*env.tcp_pos()[:2], Z_TRANSIT])
    yield from _move(env, up, env.gripper_yaw(), grip, "retreat", FAST)


def grasp_yaw(env: TabletopEnv, obj: str) -> float:
    """Gripper heading that closes the fingers across ``obj``'s narrow side, nearest to 0."""
    period = env.object_kind(obj).yaw_period
    if period == 0.0:
        return 0.0
    yaw = env.object_yaw(obj)
    return float(yaw - period * np.round(yaw / period))


@dataclass(frozen=True)
class PickPlace:
    """Grasp ``obj`` and let go of it over ``dest``: "plate", "bowl", "basket", "drawer", or
    another object's name to stack on it; ``offset`` ``[2]`` shifts the spot on the plate."""

    obj: str
    dest: str
    offset: tuple[float, float] = (0.0, 0.0)
    holds_object = True
    freeze_phases = ("approach", "descend", "grasp", "lift", "carry", "lower")

    def _drop_point(self, env: TabletopEnv) -> np.ndarray:
        """Where the object's centre should be when let go, ``[3]``."""
        rest = env.object_kind(self.obj).rest_z
        if self.dest == "plate":
            xy = env.body_pos("plate")[:2] + np.asarray(self.offset)
            z = fx.PLATE_TOP + rest + RELEASE_GAP
        elif self.dest == "bowl":
            # Dropped in over the rim: the fingers would not fit between the walls.
            xy = env.body_pos("bowl")[:2]
            z = fx.BOWL_RIM + rest + RELEASE_GAP
        elif self.dest == "basket":
            xy = env.body_pos("basket")[:2]
            z = fx.BASKET_FLOOR + rest + 2 * RELEASE_GAP
        elif self.dest == "drawer":
            # The front part of the drawer, the part pulled out of the cabinet.
            spot = np.array([0.0, fx.DRAWER_INNER_Y[0] + 0.055, 0.0])
            xy = env.point_to_world("drawer", spot)[:2]
            z = fx.DRAWER_FLOOR + rest + RELEASE_GAP
        else:
            below = env.object_pos(self.dest)
            xy = below[:2]
            z = below[2] + env.object_kind(self.dest).rest_z + rest + RELEASE_GAP
        return np.array([xy[0], xy[1], z])

    def _grasp(self, env: TabletopEnv, yaw: float) -> Iterator[Command]:
        """Approach, descend, close and lift; the generator returns whether the object came up."""
        obj = self.obj
        # Fingers close at the object's centre height, or as low as the table lets them.
        grasp_z = max(env.object_pos(obj)[2], GRASP_Z_MIN)
        yield from _move(env, _over(env, obj, Z_TRANSIT), yaw, OPEN, "approach", FAST, tol=0.01)
        yield from _move(env, _over(env, obj, grasp_z), yaw, OPEN, "descend", SLOW, 0.004, 40)
        yield from hold(env, CLOSE, 6, "grasp")
        z0 = env.object_pos(obj)[2]
        up = np.array([*env.tcp_pos()[:2], Z_TRANSIT])
        yield from _move(env, up, yaw, CLOSE, "lift", SLOW)
        return bool(env.object_pos(obj)[2] > z0 + 0.05)

    def run(self, env: TabletopEnv) -> Iterator[Command]:
        obj = self.obj
        for _ in range(3):
            yaw = grasp_yaw(env, obj)
            lifted = yield from self._grasp(env, yaw)
            if lifted:
                break
            yield from hold(env, OPEN, 4, "regrasp")
        offset = env.tcp_pos()[2] - env.object_pos(obj)[2]  # TCP above the object's centre
        start = env.tcp_pos()[:2].copy()
        total = max(float(np.linalg.norm(self._drop_point(env)[:2] - start)), 1e-6)
        for _ in range(80):
            drop = self._drop_point(env)
            goal = np.array([drop[0], drop[1], Z_TRANSIT])
            if np.linalg.norm(goal - env.tcp_pos()) < 0.01:
                break
            done = 1.0 - float(np.linalg.norm(drop[:2] - env.tcp_pos()[:2])) / total
            action = _action(env, goal, yaw, CLOSE, FAST)
            yield Command(action, "carry", float(np.clip(done, 0.0, 1.0)))
        release = lambda: self._drop_point(env) + np.array([0.0, 0.0, offset])  # noqa: E731
        yield from _move(env, release, yaw, CLOSE, "lower", SLOW, tol=0.004, max_steps=40)
        yield from hold(env, OPEN, 5, "release")
        yield from retreat(env, OPEN)


PUSH_Z = 0.025  # TCP height while pushing: closed fingertips 1 cm above the table
PUSHER_HALF = 0.012  # half width of the two closed fingers
PUSH_DONE = 0.012  # stop pushing once the object's centre is this close to the square's


@dataclass(frozen=True)
class Push:
    """Push ``obj`` onto the target square with the closed fingers."""

    obj: str
    holds_object = False
    freeze_phases = ("approach", "descend", "push")

    def _direction(self, env: TabletopEnv) -> tuple[np.ndarray, float]:
        """Unit vector ``[2]`` from the object to the square's centre, and the distance."""
        delta = env.body_pos("target")[:2] - env.object_pos(self.obj)[:2]
        dist = float(np.linalg.norm(delta))
        return delta / max(dist, 1e-9), dist

    def run(self, env: TabletopEnv) -> Iterator[Command]:
        # Pusher centre this far behind the object's centre when touching its back.
        behind = env.object_kind(self.obj).footprint * 0.75 + PUSHER_HALF + 0.003
        for _ in range(3):
            d, dist = self._direction(env)
            if dist < PUSH_DONE:
                return
            start = env.object_pos(self.obj)[:2] - d * (behind + 0.04)
            yield from _move(env, np.array([*start, Z_TRANSIT]), 0.0, CLOSE, "approach", FAST, 0.01)
            yield from _move(
                env, np.array([*start, PUSH_Z]), 0.0, CLOSE, "descend", SLOW, 0.004, 40
            )
            for _ in range(100):
                d, dist = self._direction(env)
                if dist < PUSH_DONE:
                    break
                contact = env.object_pos(self.obj)[:2] - d * behind
                rel = env.tcp_pos()[:2] - contact
                lateral = rel - (rel @ d) * d
                if np.linalg.norm(lateral) > 0.02 or rel @ d > 0.02:
                    break  # slipped off the object's back: go round again
                goal = np.array([*(contact + d * min(0.02, dist)), PUSH_Z])
                yield Command(_action(env, goal, 0.0, CLOSE, FINE), "push")
            # Back away before rising, so the fingers do not drag the object up with them.
            away = np.array([*(env.tcp_pos()[:2] - d * 0.03), PUSH_Z])
            yield from _move(env, away, 0.0, CLOSE, "back_off", SLOW, 0.005, 10)
            yield from retreat(env, CLOSE)


@dataclass(frozen=True)
class OpenDrawer:
    """Grasp the drawer handle from above and pull the drawer out."""

    holds_object = True
    freeze_phases = ("approach", "descend", "grasp", "pull")

    def run(self, env: TabletopEnv) -> Iterator[Command]:
        handle = lambda: env.point_to_world("drawer", np.asarray(fx.HANDLE_POS))  # noqa: E731
        above = lambda: np.array([*handle()[:2], Z_TRANSIT])  # noqa: E731
        for _ in range(3):
            yield from _move(env, above, 0.0, OPEN, "approach", FAST, tol=0.01)
            yield from _move(env, handle, 0.0, OPEN, "descend", SLOW, tol=0.004, max_steps=40)
            yield from hold(env, CLOSE, 6, "grasp")
            for _ in range(60):
                opening = env.joint_value("drawer")
                if opening >= DRAWER_PULL_TO:
                    break
                action = _action(env, handle() + np.array([0.0, -0.03, 0.0]), 0.0, CLOSE, FINE)
                yield Command(action, "pull", opening / DRAWER_PULL_TO)
            yield from hold(env, OPEN, 5, "release")
            yield from retreat(env, OPEN)
            if env.joint_value("drawer") >= DRAWER_PULL_TO - 0.01:
                return


@dataclass(frozen=True)
class PressButton:
    """Push the button cap down with the closed fingertips."""

    holds_object = False
    freeze_phases = ("approach", "descend", "press")

    def run(self, env: TabletopEnv) -> Iterator[Command]:
        top = fx.BUTTON_CAP_TOP
        yield from _move(
            env, _over(env, "button_cap", Z_TRANSIT), 0.0, CLOSE, "approach", FAST, 0.01
        )
        touch = top + FINGERTIP_BELOW_TCP + 0.005  # fingertips just above the cap
        yield from _move(
            env, _over(env, "button_cap", touch), 0.0, CLOSE, "descend", SLOW, 0.004, 40
        )
        # Aim below the cap's travel so the push keeps going until the cap bottoms out.
        through = _over(env, "button_cap", top - fx.BUTTON_TRAVEL + FINGERTIP_BELOW_TCP - 0.01)
        for _ in range(30):
            if env.joint_value("button") <= -fx.BUTTON_TRAVEL + 0.002:
                break
            yield Command(_action(env, through(), 0.0, CLOSE, FINE), "press")
        yield from retreat(env, CLOSE)


@dataclass(frozen=True)
class TurnKnob:
    """Grasp the knob's bar and turn it counter-clockwise (seen from above)."""

    holds_object = True
    freeze_phases = ("approach", "descend", "grasp", "turn")

    def run(self, env: TabletopEnv) -> Iterator[Command]:
        centre = env.body_pos("knob_dial")
        angle = env.joint_value("knob")
        # Fingers close across the bar, which lies along the dial's y axis.
        yaw = float(angle - np.pi * np.round(angle / np.pi))
        grasp = np.array([centre[0], centre[1], fx.KNOB_GRASP_Z])
        above = np.array([centre[0], centre[1], Z_TRANSIT])
        yield from _move(env, above, yaw, OPEN, "approach", FAST, tol=0.01)
        yield from _move(env, grasp, yaw, OPEN, "descend", SLOW, tol=0.004, max_steps=40)
        yield from hold(env, CLOSE, 6, "grasp")
        start = env.joint_value("knob")
        for _ in range(40):
            turned = env.joint_value("knob") - start
            if turned >= KNOB_TURN - 0.05:
                break
            action = _action(env, grasp, env.gripper_yaw() + TURN_RATE, CLOSE, FINE)
            yield Command(action, "turn", turned / KNOB_TURN)
        yield from hold(env, OPEN, 5, "release")
        yield from retreat(env, OPEN)
