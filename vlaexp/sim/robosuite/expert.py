"""The scripted expert of the robosuite tasks, with optional faults for failure data.

A phase machine over privileged state: turn the gripper to the target's faces and hover
over it, descend, close, lift; for pick-and-place tasks carry the object over its goal,
lower it, open and back off. Each step commands the OSC_POSE goal straight at the phase's
waypoint (an action of 1 moves the goal 5 cm or 0.5 rad). If the object slips out of the
fingers it starts over from the hover.

Faults make it fail on purpose and say so in ``expert.fault`` / ``expert.fault_step``:

- ``early_release``: the fingers open while the object is carried (Lift: once it is lifted
  a few millimetres, below the success height), then the expert stays where it is.
- ``wrong_target``: the task's other object or place (Stack: the green cube onto the red
  one; PickPlaceCan: the milk's bin).
- ``freeze``: from the start of a randomly chosen phase before the goal is reached, the
  expert stops moving for the rest of the episode.
- ``action_noise`` (a std, not a discrete fault): Gaussian noise on every action.

Which enabled fault an episode gets, and when, is drawn from the episode seed.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.sim.base import ACTION_DIM, Expert
from vlaexp.sim.robosuite.env import RobosuiteEnv
from vlaexp.sim.robosuite.tasks import Placement, PlacementFn

FAULTS = ("early_release", "wrong_target", "freeze")
OPEN, CLOSE = -1.0, 1.0
POS_SCALE = 0.05  # metres of OSC_POSE goal offset per unit of action
ROT_SCALE = 0.5  # radians per unit of action
# The OSC goal is set this many times the remaining error away: with a goal right at the
# waypoint the arm stalls about 7 mm short (joint damping and friction against kp=150).
POS_GAIN = 3.0
# Grip-site orientation pointing straight down with the fingers closing along world y.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
# The Panda's palm is 3.3 cm above the grip site; the site goes at most this far below an
# object's top, keeping the palm 1.3 cm clear of it.
GRASP_DEPTH = 0.02
HOVER = 0.08  # height of the hover waypoint above the grasp point (m)
LIFT_TO = 0.10  # Lift: how far above its start the object is raised (m)
CARRY_CLEARANCE = 0.12  # pick-and-place: object origin height above start / goal while carried
RELEASE_GAP = 0.01  # the object is let go this far above where it will rest (m)
STALLED = 0.001  # lowering stops once the object sinks less than this per step (it rests)
NEIGHBOUR_RADIUS = 0.12  # another object closer than this (m) decides the finger heading
AIM_MARGIN = 0.02  # clearance (m) between the placed object and the goal region's edges
LIFT_SPEED = 0.4  # action magnitude cap while raising a held object (gentle on the grasp)
DESCEND_SPEED = 0.5  # action cap while descending onto the object (no overshoot into it)
DESCEND_STEPS = 30  # a descent taking longer than this is blocked
# The fingers' command moves a quarter of its range per 20 Hz step (8 steps end to end):
# 6 steps squeeze a cube or the can, 8 open them fully.
CLOSE_STEPS = 6
OPEN_STEPS = 8
REACHED = 0.008  # waypoint tolerance (m)
ALIGNED = 0.08  # orientation tolerance (rad)
PHASES = ("hover", "descend", "close", "lift", "carry", "lower", "release", "retreat")
# Lift's success height is 4 cm above the table (2 cm above the cube's start): the fault lets
# go once the cube is this far up (m) and brakes back down, as the arm would carry the still
# gripped cube past 2 cm in the four steps the fingers take to open.
EARLY_RELEASE_LIFT = (0.006, 0.010)
EARLY_RELEASE_CARRY_STEPS = (0, 4)  # steps into the carry phase at which the fingers open


class RobosuiteExpert(Expert):
    """Pick (and place) expert for one :class:`RobosuiteEnv`; reset it every episode."""

    def __init__(self, env: RobosuiteEnv, perturbation: PerturbationConfig | None = None) -> None:
        self.env = env
        self.cfg = perturbation if perturbation is not None else env.perturbation
        self.check_action_noise(self.cfg)
        self.fault = "none"
        self.fault_step: int | None = None
        self._object = env.task.target
        self._placement: PlacementFn | None = env.task.placement
        self._phase = "hover"
        self._phase_steps = 0
        self._steps = 0
        self._frozen = False
        self._released_early = False
        self._noise_rng: np.random.Generator | None = None
        self._noisy = False  # this episode's actions get action_noise (drawn at reset)
        self._planned = False
        self._start = np.zeros(3)
        self._hold_at = np.zeros(3)
        self._freeze_phase = ""
        self._release_lift = 0.0
        self._release_carry_step = 0
        self._last_z = 0.0
        self._turn = 0.0  # planned finger heading, radians from the default

    @property
    def enabled_faults(self) -> tuple[str, ...]:
        return tuple(f for f in FAULTS if getattr(self.cfg, f))

    def reset(self) -> None:
        """Forget the plan; the next :meth:`act` plans the episode the env is in.

        Works before or after ``env.reset``: the plan is made from the env's state at the
        first action of an episode.
        """
        self._planned = False
        self._steps = 0
        self.fault = "none"
        self.fault_step = None

    def _plan_episode(self) -> None:
        """Draw this episode's fault from the env's seed and start from the hover phase."""
        env = self.env
        rng = np.random.default_rng([env.seed, 3])
        self._noise_rng = np.random.default_rng([env.seed, 4])
        self._noisy = self.draws_action_noise(self.cfg, env.seed)
        faults = self.enabled_faults
        self.fault = "none"
        # fault_prob mixes clean and faulted episodes in one dataset (as the tabletop expert).
        if faults and rng.random() < self.cfg.fault_prob:
            self.fault = faults[int(rng.integers(len(faults)))]
        self.fault_step = 0 if self.fault == "wrong_target" else None
        if self.fault == "wrong_target":
            assert env.task.wrong_target is not None  # the suite refuses it otherwise
            self._object, self._placement = env.task.wrong_target
        else:
            self._object, self._placement = env.task.target, env.task.placement
        phases = ["hover", "descend", "close", "lift"]
        if self._placement is not None:
            phases += ["carry", "lower"]
        self._freeze_phase = phases[int(rng.integers(len(phases)))]
        self._release_lift = float(rng.uniform(*EARLY_RELEASE_LIFT))
        self._release_carry_step = int(rng.integers(*EARLY_RELEASE_CARRY_STEPS, endpoint=True))
        self._start = env.object_pos(self._object)
        self._enter("hover")
        self._steps = 0
        self._frozen = False
        self._released_early = False
        self._planned = True

    def info(self) -> dict[str, Any]:
        """What was injected this episode: ``fault``, ``fault_step``, ``action_noise``."""
        return {
            "fault": self.fault,
            "fault_step": self.fault_step,
            "action_noise": float(self.cfg.action_noise) if self._noisy else 0.0,
        }

    @property
    def phase(self) -> str:
        """The phase the next action serves (one of :data:`PHASES`)."""
        return self._phase

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """Next float32[7] action; ``obs`` is unused (the expert reads privileged state)."""
        if self.env.seed is None:
            raise RuntimeError("reset the env before asking the expert to act")
        # A new episode: planned after expert.reset(), or when the env was reset under us.
        if not self._planned or (self.env.step_count == 0 and self._steps > 0):
            self._plan_episode()
        assert self._noise_rng is not None
        self._steps += 1
        if self._frozen:
            action = np.zeros(ACTION_DIM)
        elif self._released_early:
            action = self._toward(self._hold_at, OPEN)
        else:
            self._advance()
            if self.fault == "freeze" and self._phase == self._freeze_phase:
                self._frozen, self.fault_step = True, self._steps
                action = np.zeros(ACTION_DIM)
            elif self.fault == "early_release" and self._should_release():
                self._released_early, self.fault_step = True, self._steps
                self._hold_at = self.env.grip_pos()
                if self._placement is None:
                    self._hold_at[2] -= self.env.object_pos(self._object)[2] - self._start[2]
                action = self._toward(self._hold_at, OPEN)
            else:
                action = self._command()
        if self._noisy:
            action = action + self._noise_rng.normal(0.0, self.cfg.action_noise, ACTION_DIM)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ phases
    def _advance(self) -> None:
        """Move to the next phase when the current one is done (or back when the grasp is lost)."""
        env, phase = self.env, self._phase
        grip = env.grip_pos()
        held = env.is_grasping(self._object)
        if phase in ("lift", "carry", "lower") and self._phase_steps > 2 and not held:
            return self._enter("hover")
        if phase == "hover":
            # Descending off-centre lands a finger on the object: line up tightly in xy.
            err = grip - self._hover_point()
            near = np.linalg.norm(err[:2]) < REACHED / 2 and abs(err[2]) < 2 * REACHED
            if near and self._orientation_error() < ALIGNED:
                self._enter("descend")
        elif phase == "descend":
            if np.linalg.norm(grip - self._grasp_point()) < REACHED:
                self._enter("close")
            elif self._phase_steps >= DESCEND_STEPS:  # blocked (a finger on an edge): retry
                self._enter("hover")
        elif phase == "close":
            if self._phase_steps >= CLOSE_STEPS:
                self._enter("lift")
        elif phase == "lift":
            if self._placement is not None and self._lift_error() < 2 * REACHED:
                self._enter("carry")
        elif phase == "carry":
            offset = self._aim()[:2] - env.object_pos(self._object)[:2]
            if np.linalg.norm(offset) < REACHED:
                self._enter("lower")
        elif phase == "lower":
            z = float(env.object_pos(self._object)[2])
            resting = self._phase_steps > 3 and self._last_z - z < STALLED
            if abs(self._lower_error()) < REACHED / 2 or resting:
                self._enter("release")
            self._last_z = z
        elif phase == "release" and self._phase_steps >= OPEN_STEPS:
            self._hold_at = grip + np.array([0.0, 0.0, HOVER])
            self._enter("retreat")
        self._phase_steps += 1

    def _enter(self, phase: str) -> None:
        self._phase, self._phase_steps = phase, 0
        if phase == "hover":
            self._plan_grasp()

    def _should_release(self) -> bool:
        if self._placement is None:
            lifted = self.env.object_pos(self._object)[2] - self._start[2]
            return self._phase == "lift" and lifted > self._release_lift
        return self._phase == "carry" and self._phase_steps > self._release_carry_step

    def _command(self) -> np.ndarray:
        env, phase = self.env, self._phase
        grip = env.grip_pos()
        if phase == "hover":
            return self._toward(self._hover_point(), OPEN)
        if phase == "descend":
            return self._toward(self._grasp_point(), OPEN, speed=DESCEND_SPEED)
        if phase == "close":
            return self._toward(self._grasp_point(), CLOSE)
        if phase == "lift":
            target = grip + np.array([0.0, 0.0, self._lift_error()])
            return self._toward(target, CLOSE, speed=LIFT_SPEED)
        if phase == "carry":
            offset = self._aim() - env.object_pos(self._object)
            target = grip + np.array([offset[0], offset[1], self._lift_error()])
            return self._toward(target, CLOSE)
        if phase == "lower":
            target = grip + np.array([0.0, 0.0, self._lower_error()])
            return self._toward(target, CLOSE, speed=LIFT_SPEED)
        if phase == "release":
            return self._toward(grip, OPEN)
        return self._toward(self._hold_at, OPEN)  # retreat

    # ------------------------------------------------------------------ waypoints
    def _grasp_point(self) -> np.ndarray:
        """float[3] grip-site position with the finger pads around the object's middle, or
        its upper part for a tall object (the palm must stay above the object and, for the
        can, above the bin walls)."""
        point = self.env.object_pos(self._object)
        point[2] = max(point[2], self.env.object_top(self._object) - GRASP_DEPTH)
        return point

    def _hover_point(self) -> np.ndarray:
        return self._grasp_point() + np.array([0.0, 0.0, HOVER])

    def _goal(self) -> Placement:
        assert self._placement is not None
        return self.env.placement(self._placement, self._object)

    def _aim(self) -> np.ndarray:
        """float[3] where the object goes: the goal point nearest the arm's base, well inside
        the goal region (a far bin corner is at the edge of the Panda's reach)."""
        margin = self.env.object_radius(self._object) + AIM_MARGIN
        return self._goal().aim(self.env.robot_base_pos(), margin)

    def _carry_height(self) -> float:
        """Object-origin height while carrying (clear of the support and bin walls)."""
        if self._placement is None:
            return float(self._start[2] + LIFT_TO)
        return float(max(self._start[2], self._goal().centre[2]) + CARRY_CLEARANCE)

    def _lift_error(self) -> float:
        """How far (m) the object is below its carry height."""
        return self._carry_height() - float(self.env.object_pos(self._object)[2])

    def _lower_error(self) -> float:
        """How far (m) the object must still move (negative: down) to its release height."""
        target = self._aim()[2] + RELEASE_GAP
        return target - float(self.env.object_pos(self._object)[2])

    # ------------------------------------------------------------------ control
    def _plan_grasp(self) -> None:
        """Choose the heading of the fingers' closing axis for the next grasp.

        Of the object's symmetric grasps (a cube: every quarter turn; a round object: any),
        take the one least turned from the default heading, unless another object stands
        close: then close the fingers across the line to it, so no finger lands on it.
        """
        period = self.env.task.grasp_periods[self._object]
        base = 0.0 if period is None else _wrap(self.env.object_yaw(self._object), period)
        # Two grasps a quarter turn apart, the least-turned first.
        other = base - np.copysign(np.pi / 2, base) if base else np.pi / 2
        self._turn = base
        pos = self.env.object_pos(self._object)
        neighbours = [
            self.env.object_pos(n) - pos for n in self.env.task.scene_objects if n != self._object
        ]
        near = [d for d in neighbours if np.linalg.norm(d[:2]) < NEIGHBOUR_RADIUS]
        if near:
            d = min(near, key=lambda v: np.linalg.norm(v[:2]))
            toward = np.arctan2(d[1], d[0])
            # DOWN's closing axis is world y (heading pi/2); prefer it square to `toward`.
            alignment = [abs(np.cos(np.pi / 2 + t - toward)) for t in (base, other)]
            self._turn = (base, other)[int(np.argmin(alignment))]

    def _target_orientation(self) -> np.ndarray:
        """float[3, 3] grip-site orientation: pointing down, fingers at the planned heading."""
        c, s = np.cos(self._turn), np.sin(self._turn)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ DOWN

    def _rotation_error(self) -> np.ndarray:
        """float[3] world-frame rotation vector from the current to the target orientation."""
        err = self._target_orientation() @ self.env.grip_mat().T
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, err.reshape(-1))
        rotvec = np.zeros(3)
        mujoco.mju_quat2Vel(rotvec, quat, 1.0)
        return rotvec

    def _orientation_error(self) -> float:
        return float(np.linalg.norm(self._rotation_error()))

    def _toward(self, target: np.ndarray, gripper: float, speed: float = 1.0) -> np.ndarray:
        """float[7] action toward ``target`` float[3] (position part capped at ``speed``) and
        the planned orientation, with the gripper command ``gripper``."""
        action = np.zeros(ACTION_DIM)
        action[:3] = np.clip(POS_GAIN * (target - self.env.grip_pos()) / POS_SCALE, -speed, speed)
        action[3:6] = np.clip(self._rotation_error() / ROT_SCALE, -1.0, 1.0)
        action[6] = gripper
        return action


def _wrap(angle: float, period: float) -> float:
    """``angle`` shifted by a multiple of ``period`` into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)
