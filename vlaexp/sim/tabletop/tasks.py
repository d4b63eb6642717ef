"""The four suites' tasks: instruction, scene, seeded layout, success goals and expert plans.

Mirrors LIBERO's suites: ``spatial`` (two identical red cubes, the target named by where it
is), ``object`` (a different object into the basket each task), ``goal`` (one scene, ten
goals) and ``long`` (two goals of the goal scene in sequence; both must hold at the end).
Each task also has a ``wrong_plan``: a plausible plan for the wrong object or goal, used by
the expert's ``wrong_target`` fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from vlaexp.sim.tabletop import fixtures as fx
from vlaexp.sim.tabletop import predicates as pr
from vlaexp.sim.tabletop.layout import Layout, LayoutBuilder, LayoutRejected, sample_layout
from vlaexp.sim.tabletop.objects import OBJECT_KINDS, SceneObject
from vlaexp.sim.tabletop.scene import SceneSpec
from vlaexp.sim.tabletop.skills import OpenDrawer, PickPlace, PressButton, Push, Skill, TurnKnob

SUITE_NAMES = ("spatial", "object", "goal", "long")
# LIBERO's horizons; the expert needs well under these (see experiments/tabletop_experts).
DEFAULT_MAX_STEPS = {"spatial": 220, "object": 280, "goal": 300, "long": 520}

# Where objects may start: inside the agentview image and the gripper's workspace.
AREA_X = (-0.33, 0.33)
AREA_Y = (-0.22, 0.28)


@dataclass(frozen=True)
class TaskSpec:
    suite: str
    instruction: str
    scene: SceneSpec
    layout: Callable[[np.random.Generator], Layout]
    goals: tuple[pr.Goal, ...]
    plan: tuple[Skill, ...]
    wrong_plan: tuple[Skill, ...]

    @property
    def carried(self) -> tuple[str, ...]:
        """Objects the task needs picked up and carried (for failure classification)."""
        return tuple(s.obj for s in self.plan if isinstance(s, PickPlace))

    @property
    def manipulated(self) -> tuple[str, ...]:
        """Bodies the task needs the gripper to push, pull, press or turn."""
        bodies = {
            Push: None,
            OpenDrawer: "drawer",
            PressButton: "button_cap",
            TurnKnob: "knob_dial",
        }
        out = []
        for s in self.plan:
            if type(s) in bodies:
                out.append(s.obj if isinstance(s, Push) else bodies[type(s)])
        return tuple(out)


def _yaw_range(name: str, scene: SceneSpec) -> tuple[float, float]:
    """Random heading of an object: any for round shapes, within 30 degrees of the natural
    grasp for the others."""
    kind = next(o.kind for o in scene.objects if o.name == name)
    if kind.yaw_period == 0.0:
        return (-np.pi, np.pi)
    return (-np.pi / 6, np.pi / 6)


def _in_area(xy: np.ndarray) -> bool:
    return AREA_X[0] <= xy[0] <= AREA_X[1] and AREA_Y[0] <= xy[1] <= AREA_Y[1]


def _place_near(
    b: LayoutBuilder,
    name: str,
    anchor: str,
    direction: np.ndarray,
    yaw_range: tuple[float, float],
    extra: tuple[float, float] = (0.0, 0.03),
) -> np.ndarray:
    """Place cube ``name`` beside fixture ``anchor``, along unit ``direction`` ``[2]`` (camera
    left is -x, behind is +y), ``extra`` metres further out than the minimum gap."""
    radius = OBJECT_KINDS["cube"].footprint
    anchor_radius = fx.FIXTURE_FOOTPRINT[anchor]
    dist = anchor_radius + radius + b.gap + b.rng.uniform(*extra)
    side = np.array([-direction[1], direction[0]]) * b.rng.uniform(-0.015, 0.015)
    xy = b.xy(anchor) + direction * dist + side
    if not _in_area(xy):
        raise LayoutRejected(name)
    return b.place(name, xy, radius, float(b.rng.uniform(*yaw_range)))


# ---------------------------------------------------------------------------- spatial
_LEFT, _RIGHT = np.array([-1.0, 0.0]), np.array([1.0, 0.0])
_BEHIND, _FRONT = np.array([0.0, 1.0]), np.array([0.0, -1.0])
_CUBE_YAW = (-np.pi / 4, np.pi / 4)
SPATIAL_SCENE = SceneSpec(
    objects=(
        SceneObject(OBJECT_KINDS["cube"], "red", "a"),
        SceneObject(OBJECT_KINDS["cube"], "red", "b"),
    ),
    fixtures=("plate", "bowl", "stand"),
)
TARGET, OTHER = "red_cube_a", "red_cube_b"


def _spatial_fixtures(b: LayoutBuilder) -> None:
    for name in ("plate", "bowl", "stand"):
        b.sample(name, (-0.24, 0.24), (-0.1, 0.18), fx.FIXTURE_FOOTPRINT[name])


def _spatial_opposite(anchor: str, direction: np.ndarray, b: LayoutBuilder) -> None:
    """Target on one side of ``anchor``, the look-alike on the opposite side."""
    _spatial_fixtures(b)
    _place_near(b, TARGET, anchor, direction, _CUBE_YAW)
    _place_near(b, OTHER, anchor, -direction, _CUBE_YAW)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-np.pi, np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _spatial_next_to_bowl(b: LayoutBuilder) -> None:
    _spatial_fixtures(b)
    _place_near(b, TARGET, "bowl", _random_direction(b.rng), _CUBE_YAW)
    xy = b.sample(OTHER, AREA_X, AREA_Y, OBJECT_KINDS["cube"].footprint, _CUBE_YAW)
    if np.linalg.norm(xy - b.xy("bowl")) < 0.25:
        raise LayoutRejected(OTHER)


def _spatial_between(b: LayoutBuilder) -> None:
    b.sample("plate", (-0.22, 0.22), (-0.1, 0.18), fx.PLATE_RADIUS)
    bowl = b.xy("plate") + _random_direction(b.rng) * b.rng.uniform(0.28, 0.34)
    if not (_in_area(bowl) and -0.12 < bowl[1] < 0.2):
        raise LayoutRejected("bowl")
    b.place("bowl", bowl, fx.FIXTURE_FOOTPRINT["bowl"])
    b.sample("stand", (-0.24, 0.24), (-0.1, 0.18), fx.FIXTURE_FOOTPRINT["stand"])
    mid = (b.xy("plate") + bowl) / 2 + b.rng.uniform(-0.01, 0.01, 2)
    b.place(
        TARGET,
        mid,
        OBJECT_KINDS["cube"].footprint,
        float(b.rng.uniform(*_CUBE_YAW)),
        ignore=("plate", "bowl"),
    )
    xy = b.sample(OTHER, AREA_X, AREA_Y, OBJECT_KINDS["cube"].footprint, _CUBE_YAW)
    if np.linalg.norm(xy - mid) < 0.2:  # the segment's half length is at most 0.17
        raise LayoutRejected(OTHER)


def _spatial_on_stand(b: LayoutBuilder) -> None:
    _spatial_fixtures(b)
    xy = b.xy("stand") + b.rng.uniform(-0.015, 0.015, 2)
    b.place(
        TARGET,
        xy,
        OBJECT_KINDS["cube"].footprint,
        float(b.rng.uniform(*_CUBE_YAW)),
        support_z=fx.STAND_TOP,
        ignore=("stand",),
    )
    b.sample(OTHER, AREA_X, AREA_Y, OBJECT_KINDS["cube"].footprint, _CUBE_YAW)


def _spatial_task(text: str, fill: Callable[[LayoutBuilder], None], dest: str) -> TaskSpec:
    goal = pr.OnPlate(TARGET) if dest == "plate" else pr.InBowl(TARGET)
    where = "on the plate" if dest == "plate" else "in the bowl"
    return TaskSpec(
        suite="spatial",
        instruction=f"pick up the red cube {text} and place it {where}",
        scene=SPATIAL_SCENE,
        layout=partial(sample_layout, fill=fill),
        goals=(goal,),
        plan=(PickPlace(TARGET, dest),),
        wrong_plan=(PickPlace(OTHER, dest),),
    )


SPATIAL_TASKS = (
    _spatial_task("to the left of the plate", partial(_spatial_opposite, "plate", _LEFT), "plate"),
    _spatial_task(
        "to the right of the plate", partial(_spatial_opposite, "plate", _RIGHT), "plate"
    ),
    _spatial_task("behind the plate", partial(_spatial_opposite, "plate", _BEHIND), "plate"),
    _spatial_task("in front of the plate", partial(_spatial_opposite, "plate", _FRONT), "plate"),
    _spatial_task("to the left of the bowl", partial(_spatial_opposite, "bowl", _LEFT), "bowl"),
    _spatial_task("to the right of the bowl", partial(_spatial_opposite, "bowl", _RIGHT), "bowl"),
    _spatial_task("next to the bowl", _spatial_next_to_bowl, "plate"),
    _spatial_task("between the plate and the bowl", _spatial_between, "plate"),
    _spatial_task("on the wooden stand", _spatial_on_stand, "bowl"),
    _spatial_task(
        "in front of the wooden stand", partial(_spatial_opposite, "stand", _FRONT), "plate"
    ),
)

# ---------------------------------------------------------------------------- object
OBJECT_COLORS = {
    "cube": "red",
    "cylinder": "blue",
    "ball": "green",
    "capsule": "yellow",
    "block": "orange",
    "can": "teal",
    "bar": "purple",
    "puck": "pink",
    "mug": "white",
    "brick": "brown",
}
_OBJECT_ORDER = tuple(OBJECT_COLORS)


def _object_fill(scene: SceneSpec, b: LayoutBuilder) -> None:
    b.sample("basket", (-0.2, 0.2), (-0.02, 0.16), fx.FIXTURE_FOOTPRINT["basket"])
    for obj in scene.objects:
        b.sample(obj.name, AREA_X, AREA_Y, obj.kind.footprint, _yaw_range(obj.name, scene))


def _object_task(i: int) -> TaskSpec:
    nouns = [_OBJECT_ORDER[(i + k) % len(_OBJECT_ORDER)] for k in (0, 3, 7)]
    objects = tuple(SceneObject(OBJECT_KINDS[n], OBJECT_COLORS[n]) for n in nouns)
    scene = SceneSpec(objects=objects, fixtures=("basket",))
    target, other = objects[0].name, objects[1].name
    return TaskSpec(
        suite="object",
        instruction=f"pick up the {nouns[0]} and place it in the basket",
        scene=scene,
        layout=partial(sample_layout, fill=partial(_object_fill, scene)),
        goals=(pr.InBasket(target),),
        plan=(PickPlace(target, "basket"),),
        wrong_plan=(PickPlace(other, "basket"),),
    )


OBJECT_TASKS = tuple(_object_task(i) for i in range(len(_OBJECT_ORDER)))

# ---------------------------------------------------------------------------- goal + long
RED, BLUE, YELLOW = "red_cube", "blue_cube", "yellow_cylinder"
GOAL_SCENE = SceneSpec(
    objects=(
        SceneObject(OBJECT_KINDS["cube"], "red"),
        SceneObject(OBJECT_KINDS["cube"], "blue"),
        SceneObject(OBJECT_KINDS["cylinder"], "yellow"),
    ),
    fixtures=("cabinet", "button", "knob", "plate", "bowl", "target"),
)
DRAWER_CLEARANCE = 0.1  # half width of the strip kept free in front of the cabinet


def _goal_fill(b: LayoutBuilder) -> None:
    fp = fx.FIXTURE_FOOTPRINT
    cab = b.sample("cabinet", (-0.25, -0.21), (0.21, 0.24), fp["cabinet"])
    # The drawer slides out towards the camera and the gripper pulls from in front of it.
    front = cab[1] - fx.CABINET_HALF_DEPTH
    b.block("drawer", np.array([cab[0], front]), np.array([cab[0], front - 0.18]), DRAWER_CLEARANCE)
    b.sample("button", (-0.04, 0.02), (0.23, 0.27), fp["button"])
    b.sample("knob", (0.24, 0.29), (0.21, 0.26), fp["knob"])
    b.sample("bowl", (0.06, 0.12), (0.12, 0.18), fp["bowl"])
    b.sample("plate", (0.17, 0.25), (-0.04, 0.04), fp["plate"])
    target = b.sample("target", (-0.06, 0.04), (-0.16, -0.1), fp["target"])
    # The blue cube starts 12-18 cm from the square; its push path stays clear.
    cube = OBJECT_KINDS["cube"]
    direction = _random_direction(b.rng)
    blue = target + direction * b.rng.uniform(0.12, 0.18)
    if not _in_area(blue):
        raise LayoutRejected(BLUE)
    b.place(BLUE, blue, cube.footprint, float(b.rng.uniform(*_CUBE_YAW)))
    # The fingers come down behind the cube and follow it to the square: nothing placed so
    # far may stand on that path, and nothing placed later will.
    start = blue + direction * 0.08
    for t in np.linspace(0.0, 1.0, 6):
        if not b.is_free(start + t * (target - start), 0.03, ignore=("target", BLUE)):
            raise LayoutRejected("push path")
    b.block("push", start, target, 0.035)
    b.sample(RED, AREA_X, (-0.2, 0.1), cube.footprint, _CUBE_YAW)
    b.sample(YELLOW, AREA_X, (-0.2, 0.1), OBJECT_KINDS["cylinder"].footprint)


_GOAL_LAYOUT = partial(sample_layout, fill=_goal_fill)


def _goal_scene_task(suite: str, text: str, goals, plan, wrong_plan) -> TaskSpec:
    return TaskSpec(
        suite, text, GOAL_SCENE, _GOAL_LAYOUT, tuple(goals), tuple(plan), tuple(wrong_plan)
    )


# Reusable (goal, plan step, wrong plan step) triples of the goal scene.
_G = {
    "red_plate": (pr.OnPlate(RED), PickPlace(RED, "plate"), PickPlace(BLUE, "plate")),
    "red_bowl": (pr.InBowl(RED), PickPlace(RED, "bowl"), PickPlace(RED, "plate")),
    "yellow_plate": (pr.OnPlate(YELLOW), PickPlace(YELLOW, "plate"), PickPlace(RED, "plate")),
    "blue_bowl": (pr.InBowl(BLUE), PickPlace(BLUE, "bowl"), PickPlace(YELLOW, "bowl")),
    "stack": (pr.Stacked(RED, BLUE), PickPlace(RED, BLUE), PickPlace(BLUE, RED)),
    "push": (pr.InTargetSquare(BLUE), Push(BLUE), PickPlace(BLUE, "bowl")),
    "drawer": (pr.DrawerOpen(), OpenDrawer(), PressButton()),
    "button": (pr.ButtonPressed(), PressButton(), TurnKnob()),
    "knob": (pr.KnobTurned(), TurnKnob(), PressButton()),
    "red_drawer": (pr.InDrawer(RED), PickPlace(RED, "drawer"), PickPlace(RED, "bowl")),
    "yellow_drawer": (pr.InDrawer(YELLOW), PickPlace(YELLOW, "drawer"), PickPlace(YELLOW, "plate")),
}


def _single(text: str, key: str) -> TaskSpec:
    goal, step, wrong = _G[key]
    return _goal_scene_task("goal", text, [goal], [step], [wrong])


def _sequence(suite: str, text: str, *keys: str) -> TaskSpec:
    """Goals in order; the wrong plan does the first right and the last one wrong."""
    goals = [_G[k][0] for k in keys]
    plan = [_G[k][1] for k in keys]
    wrong = [*plan[:-1], _G[keys[-1]][2]]
    return _goal_scene_task(suite, text, goals, plan, wrong)


GOAL_TASKS = (
    _single("put the red cube on the plate", "red_plate"),
    _single("put the red cube in the bowl", "red_bowl"),
    _single("put the yellow cylinder on the plate", "yellow_plate"),
    _single("put the blue cube in the bowl", "blue_bowl"),
    _single("stack the red cube on the blue cube", "stack"),
    _single("push the blue cube onto the green square", "push"),
    _single("open the drawer", "drawer"),
    _single("press the button", "button"),
    _single("turn the knob", "knob"),
    _sequence("goal", "open the drawer and put the red cube inside", "drawer", "red_drawer"),
)

# The two cubes go side by side along y: the fingers open along x (give or take the grasp
# yaw), so releasing the second cube does not shove the first one.
_BEHIND_ON_PLATE, _FRONT_ON_PLATE = (0.0, 0.04), (0.0, -0.04)
_BOTH_ON_PLATE = _goal_scene_task(
    "long",
    "put both the red cube and the blue cube on the plate",
    [pr.OnPlate(RED), pr.OnPlate(BLUE)],
    [PickPlace(RED, "plate", _BEHIND_ON_PLATE), PickPlace(BLUE, "plate", _FRONT_ON_PLATE)],
    [PickPlace(RED, "plate", _BEHIND_ON_PLATE), PickPlace(YELLOW, "plate", _FRONT_ON_PLATE)],
)

LONG_TASKS = (
    _BOTH_ON_PLATE,
    _sequence("long", "put the red cube on the plate and press the button", "red_plate", "button"),
    _sequence(
        "long", "stack the red cube on the blue cube and press the button", "stack", "button"
    ),
    _sequence(
        "long",
        "put the red cube in the bowl and put the yellow cylinder on the plate",
        "red_bowl",
        "yellow_plate",
    ),
    _sequence("long", "press the button and turn the knob", "button", "knob"),
    _sequence(
        "long", "open the drawer and put the yellow cylinder inside", "drawer", "yellow_drawer"
    ),
    _sequence(
        "long",
        "push the blue cube onto the green square and put the red cube in the bowl",
        "push",
        "red_bowl",
    ),
    _sequence(
        "long", "turn the knob and put the yellow cylinder on the plate", "knob", "yellow_plate"
    ),
    _sequence("long", "open the drawer and press the button", "drawer", "button"),
    _sequence("long", "put the blue cube in the bowl and turn the knob", "blue_bowl", "knob"),
)

SUITES: dict[str, tuple[TaskSpec, ...]] = {
    "spatial": SPATIAL_TASKS,
    "object": OBJECT_TASKS,
    "goal": GOAL_TASKS,
    "long": LONG_TASKS,
}
