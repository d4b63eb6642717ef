"""Scene perturbations change what the cameras see, never the task."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.config.sim import PerturbationConfig
from vlaexp.sim.tabletop.env import TabletopEnv
from vlaexp.sim.tabletop.evaluate_experts import make_suite, run_episode
from vlaexp.sim.tabletop.tasks import GOAL_TASKS

RES = 48
SEED = 1_000_003


def first_obs(**perturbation):
    env = TabletopEnv(
        GOAL_TASKS[0],
        task_id=0,
        max_steps=50,
        resolution=RES,
        perturbation=PerturbationConfig(**perturbation),
    )
    obs = env.reset(SEED)
    poses = {n: env.object_pos(n).copy() for n in env.object_names}
    fixtures = {f: env.body_pos(f).copy() for f in env.task.scene.fixtures}
    env.close()
    return obs, poses, fixtures


@pytest.fixture(scope="module")
def clean():
    return first_obs()


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than a few grey levels."""
    return float(np.mean(np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 8))


@pytest.mark.parametrize(
    ("perturbation", "min_changed", "wrist"),
    [
        ({"object_colors": True}, 0.05, "changes"),
        ({"table_texture": True}, 0.3, "changes"),
        ({"lighting": 0.5}, 0.5, "changes"),
        ({"camera_jitter": 0.03}, 0.1, "same"),  # only the agentview camera is jittered
        ({"distractors": 3}, 0.005, "any"),  # the wrist may or may not see them
    ],
)
def test_scene_perturbation_changes_pixels_not_layout(clean, perturbation, min_changed, wrist):
    obs, poses, fixtures = first_obs(**perturbation)
    clean_obs, clean_poses, clean_fixtures = clean
    assert _changed(obs["images"]["agentview"], clean_obs["images"]["agentview"]) > min_changed
    wrist_changed = _changed(obs["images"]["wrist"], clean_obs["images"]["wrist"])
    if wrist == "changes":
        assert wrist_changed > min_changed
    elif wrist == "same":
        assert wrist_changed == 0.0
    np.testing.assert_array_equal(obs["state"], clean_obs["state"])
    for name, pos in clean_poses.items():
        np.testing.assert_array_equal(poses[name], pos)
    for name, pos in clean_fixtures.items():
        np.testing.assert_array_equal(fixtures[name], pos)


def test_perturbations_are_seeded():
    a, _, _ = first_obs(object_colors=True, table_texture=True, lighting=0.3, camera_jitter=0.02)
    b, _, _ = first_obs(object_colors=True, table_texture=True, lighting=0.3, camera_jitter=0.02)
    np.testing.assert_array_equal(a["images"]["agentview"], b["images"]["agentview"])
    env = TabletopEnv(
        GOAL_TASKS[0], 0, 50, resolution=RES, perturbation=PerturbationConfig(object_colors=True)
    )
    other = env.reset(SEED + 1)["images"]["agentview"]
    first = env.reset(SEED)["images"]["agentview"]
    env.close()
    np.testing.assert_array_equal(first, first_obs(object_colors=True)[0]["images"]["agentview"])
    assert not np.array_equal(first, other)


def test_distractors_stay_clear_of_the_task():
    env = TabletopEnv(
        GOAL_TASKS[0],
        0,
        50,
        cameras=("agentview",),
        render=False,
        perturbation=PerturbationConfig(distractors=3),
    )
    layout = env.task.layout(np.random.default_rng(SEED))
    env.reset(SEED)
    names = [n for n in env.object_names if n.startswith("distractor_")]
    assert len(names) == 3
    for name in names:
        xy = env.object_pos(name)[:2]
        radius = env.object_kind(name).footprint
        for keepout in layout.keepouts:  # objects, fixtures, push path, drawer travel
            assert keepout.clearance(xy, radius) > 0.0, (name, keepout.owner)
        assert env.object_pos(name)[2] < 0.08  # resting on the table
    env.close()


def test_expert_succeeds_in_a_fully_perturbed_scene():
    scene = dict(
        object_colors=True, table_texture=True, lighting=0.4, camera_jitter=0.03, distractors=2
    )
    for suite, task_id in (("spatial", 3), ("goal", 9), ("object", 6)):
        s = make_suite(suite)
        s.perturbation = PerturbationConfig(**scene)
        env = s.make_env(task_id, render=False)
        for seed in s.eval_seeds(task_id)[:2]:
            result = run_episode(env, s.make_expert(env), seed)
            assert result["success"], (suite, task_id, seed)
        env.close()


def test_bad_perturbation_values_raise():
    with pytest.raises(ValueError, match=r"lighting=-0\.1"):
        TabletopEnv(GOAL_TASKS[0], 0, 50, perturbation=PerturbationConfig(lighting=-0.1))
    with pytest.raises(ValueError, match="distractors=-1"):
        TabletopEnv(GOAL_TASKS[0], 0, 50, perturbation=PerturbationConfig(distractors=-1))
