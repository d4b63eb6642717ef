"""Each success predicate flips true exactly when its goal state is built directly."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.sim.tabletop import fixtures as fx
from vlaexp.sim.tabletop import predicates as pr
from vlaexp.sim.tabletop.env import TabletopEnv
from vlaexp.sim.tabletop.tasks import BLUE, GOAL_TASKS, LONG_TASKS, OBJECT_TASKS, RED, SUITES

CUBE_REST = 0.02
OPEN_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])


def _v(x: float, y: float, z: float) -> np.ndarray:
    """An offset [3] in metres."""
    return np.array([x, y, z])


def build(task, seed: int = 3) -> TabletopEnv:
    env = TabletopEnv(task, task_id=0, max_steps=100, cameras=("agentview",), render=False)
    env.reset(seed)
    env.set_gripper(np.array([0.0, -0.28, 0.35]))  # parked out of the way
    return env


@pytest.fixture
def goal_env():
    env = build(GOAL_TASKS[0])
    yield env
    env.close()


@pytest.mark.parametrize("suite", list(SUITES))
def test_no_task_starts_solved(suite):
    for task in SUITES[suite]:
        for seed in (0, 1):
            env = build(task, seed)
            assert not env.is_success(), (task.instruction, seed)
            assert not any(g.holds(env) for g in task.goals), (task.instruction, seed)
            env.close()


def test_on_plate(goal_env):
    env, goal = goal_env, pr.OnPlate(RED)
    plate = env.body_pos("plate").copy()
    assert not goal.holds(env)
    env.set_object_pose(RED, plate + _v(0, 0, fx.PLATE_TOP + CUBE_REST))
    assert goal.holds(env) and env.is_success()
    # The edge of the plate: in just inside, out just outside the 1 cm margin.
    env.set_object_pose(RED, plate + _v(fx.PLATE_RADIUS - 0.012, 0, fx.PLATE_TOP + CUBE_REST))
    assert goal.holds(env)
    env.set_object_pose(RED, plate + _v(fx.PLATE_RADIUS - 0.008, 0, fx.PLATE_TOP + CUBE_REST))
    assert not goal.holds(env)
    # Hovering above the plate is not "on" it.
    env.set_object_pose(RED, plate + _v(0, 0, fx.PLATE_TOP + CUBE_REST + 0.03))
    assert not goal.holds(env)


def test_placed_object_counts_only_once_released(goal_env):
    env, goal = goal_env, pr.OnPlate(RED)
    centre = env.body_pos("plate") + _v(0, 0, fx.PLATE_TOP + CUBE_REST)
    env.set_object_pose(RED, centre)
    # Fingers 1 mm inside the cube's faces: the gripper holds it.
    env.set_gripper(centre, yaw=0.0, opening=0.019)
    assert env.touching_gripper(RED) and not goal.holds(env)
    env.set_gripper(centre + _v(0, 0, 0.15))
    assert not env.touching_gripper(RED) and goal.holds(env)


def test_step_reports_success_when_goal_state_holds(goal_env):
    env = goal_env
    result = env.step(OPEN_ACTION)
    assert not result.terminated and result.reward == 0.0
    env.set_object_pose(RED, env.body_pos("plate") + _v(0, 0, fx.PLATE_TOP + CUBE_REST))
    result = env.step(OPEN_ACTION)
    assert result.terminated and result.reward == 1.0 and result.info["success"]


def test_in_bowl(goal_env):
    env, goal = goal_env, pr.InBowl(RED)
    bowl = env.body_pos("bowl").copy()
    assert not goal.holds(env)
    env.set_object_pose(RED, bowl + _v(0, 0, fx.BOWL_FLOOR + CUBE_REST))
    assert goal.holds(env)
    env.set_object_pose(RED, bowl + _v(0, 0, fx.BOWL_RIM + CUBE_REST + 0.01))  # above the rim
    assert not goal.holds(env)
    env.set_object_pose(RED, bowl + _v(fx.BOWL_INNER_RADIUS + 0.05, 0, CUBE_REST))  # beside it
    assert not goal.holds(env)


def test_stacked(goal_env):
    env, goal = goal_env, pr.Stacked(RED, BLUE)
    spot = np.array([0.0, -0.15, 0.0])
    env.set_object_pose(BLUE, spot + _v(0, 0, CUBE_REST))
    assert not goal.holds(env)
    env.set_object_pose(RED, spot + _v(0, 0, 3 * CUBE_REST))
    assert goal.holds(env)
    assert not pr.Stacked(BLUE, RED).holds(env)  # the order matters
    env.set_object_pose(RED, spot + _v(0.03, 0, 3 * CUBE_REST))  # hanging off the side
    assert not goal.holds(env)
    env.set_object_pose(BLUE, spot + _v(0, 0, CUBE_REST + 0.04))  # the bottom one is lifted
    env.set_object_pose(RED, spot + _v(0, 0, 3 * CUBE_REST + 0.04))
    assert not goal.holds(env)


def test_in_target_square(goal_env):
    env, goal = goal_env, pr.InTargetSquare(BLUE)
    target = env.body_pos("target").copy()
    assert not goal.holds(env)
    env.set_object_pose(BLUE, target + _v(fx.TARGET_HALF - 0.005, 0, CUBE_REST))
    assert goal.holds(env)
    env.set_object_pose(BLUE, target + _v(fx.TARGET_HALF + 0.005, 0, CUBE_REST))
    assert not goal.holds(env)
    env.set_object_pose(BLUE, target + _v(0, 0, CUBE_REST + 0.05))  # carried over it
    assert not goal.holds(env)


def test_in_drawer(goal_env):
    env, goal = goal_env, pr.InDrawer(RED)
    inside = np.array([0.0, fx.DRAWER_INNER_Y[0] + 0.05, fx.DRAWER_FLOOR + CUBE_REST])
    env.set_joint_value("drawer", fx.DRAWER_TRAVEL)
    assert not goal.holds(env)
    env.set_object_pose(RED, env.point_to_world("drawer", inside))
    assert goal.holds(env)
    # The predicate follows the drawer: the same world spot is outside once it slides shut.
    env.set_joint_value("drawer", 0.0)
    assert not goal.holds(env)
    env.set_joint_value("drawer", fx.DRAWER_TRAVEL)
    assert goal.holds(env)
    in_front = np.array([0.0, fx.DRAWER_INNER_Y[0] - 0.06, CUBE_REST])
    env.set_object_pose(RED, env.point_to_world("drawer", in_front))
    assert not goal.holds(env)


@pytest.mark.parametrize(
    ("joint", "goal", "unmet", "met"),
    [
        ("drawer", pr.DrawerOpen(), 0.09, 0.11),
        ("button", pr.ButtonPressed(), -0.008, -0.012),
        ("knob", pr.KnobTurned(), 0.9, 1.1),
        ("knob", pr.KnobTurned(), -1.2, 1.2),  # clockwise does not count
    ],
)
def test_joint_goals(goal_env, joint, goal, unmet, met):
    env = goal_env
    assert not goal.holds(env)
    env.set_joint_value(joint, unmet)
    assert not goal.holds(env)
    env.set_joint_value(joint, met)
    assert goal.holds(env)


def test_joint_goal_states_persist_under_physics(goal_env):
    env = goal_env
    for joint, value in (("drawer", 0.12), ("button", -0.013), ("knob", 1.3)):
        env.set_joint_value(joint, value)
    for _ in range(20):
        env.step(OPEN_ACTION)
    assert pr.DrawerOpen().holds(env) and pr.ButtonPressed().holds(env)
    assert pr.KnobTurned().holds(env)


def test_in_basket():
    task = OBJECT_TASKS[0]
    env = build(task)
    target = task.plan[0].obj
    goal = pr.InBasket(target)
    basket = env.body_pos("basket").copy()
    rest = env.object_kind(target).rest_z
    assert not goal.holds(env)
    env.set_object_pose(target, basket + _v(0.05, -0.05, fx.BASKET_FLOOR + rest))
    assert goal.holds(env) and env.is_success()
    env.set_object_pose(target, basket + _v(0, 0, fx.BASKET_RIM + rest + 0.02))  # above it
    assert not goal.holds(env)
    env.close()


def test_long_task_needs_both_goals_at_once():
    task = LONG_TASKS[1]  # red cube on the plate, then press the button
    env = build(task)
    env.set_object_pose(RED, env.body_pos("plate") + _v(0, 0, fx.PLATE_TOP + CUBE_REST))
    result = env.step(OPEN_ACTION)
    assert result.info["subgoals"] == [True, False] and not result.terminated
    env.set_joint_value("button", -fx.BUTTON_TRAVEL)
    result = env.step(OPEN_ACTION)
    assert result.info["subgoals"] == [True, True] and result.terminated
    env.set_object_pose(RED, np.array([0.0, -0.15, CUBE_REST]))  # undo the first goal
    result = env.step(OPEN_ACTION)
    assert result.info["subgoals"] == [False, True] and not result.terminated
    env.close()
