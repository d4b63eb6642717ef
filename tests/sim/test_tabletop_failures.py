"""Failed episodes are classified from privileged state: never grasped, dropped, missed goal."""

from __future__ import annotations

import numpy as np

from vlaexp.config.sim import PerturbationConfig
from vlaexp.sim.base import FAILURE_MODES
from vlaexp.sim.rollout import rollout
from vlaexp.sim.tabletop.skills import PickPlace
from vlaexp.sim.tabletop.suite import TabletopSuite


def run(task_type: str, task_id: int, actor=None, **faults):
    suite = TabletopSuite(
        name=f"tabletop_{task_type}",
        max_steps=220,
        task_type=task_type,
        perturbation=PerturbationConfig(**faults),
        cameras=["agentview"],
    )
    env = suite.make_env(task_id, render=False)
    expert = suite.make_expert(env)
    ep = rollout(env, actor or expert.act, suite.eval_seeds(task_id)[0], after_reset=expert.reset)
    mode = None if ep.success else env.failure_mode()
    env.close()
    return ep, mode


def test_early_release_is_a_drop() -> None:
    for task_id in (0, 4):
        ep, mode = run("spatial", task_id, early_release=True)
        assert not ep.success and mode == "dropped"


def test_picking_the_wrong_object_never_grasps_the_target() -> None:
    ep, mode = run("spatial", 0, wrong_target=True)
    assert not ep.success and mode == "never_grasped"


def test_random_actions_never_grasp() -> None:
    rng = np.random.default_rng(0)
    ep, mode = run("spatial", 1, actor=lambda obs: rng.uniform(-1, 1, 7))
    assert not ep.success and mode == "never_grasped"


def test_placing_the_target_in_the_wrong_place_misses_the_goal() -> None:
    suite = TabletopSuite(
        name="tabletop_spatial", max_steps=220, task_type="spatial", cameras=["agentview"]
    )
    env = suite.make_env(0, render=False)  # goal: the cube on the plate
    env.reset(suite.eval_seeds(0)[0])
    wrong = PickPlace(env.task.carried[0], "bowl").run(env)
    for command in wrong:
        if env.step(command.action).terminated:
            break
    for _ in range(10):  # let go and let the cube settle in the bowl
        env.step(np.array([0, 0, 0.2, 0, 0, 0, -1], dtype=np.float32))
    assert not env.is_success()
    assert env.failure_mode() == "missed_goal"
    env.close()


def test_failure_modes_are_from_the_contract() -> None:
    for task_type, task_id in (("goal", 3), ("long", 0)):
        _, mode = run(task_type, task_id, freeze=True)
        assert mode in FAILURE_MODES
