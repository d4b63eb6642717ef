"""Scene perturbations of the robosuite suites: they change what the cameras see, per seed,
and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.config.sim import PerturbationConfig
from vlaexp.sim.robosuite import RobosuiteSuite

pytestmark = pytest.mark.sim
SEED = 1_000_000


def first_obs(env_name: str, seed: int = SEED, **perturbation) -> dict:
    suite = RobosuiteSuite(
        name="robosuite_test",
        max_steps=50,
        env_name=env_name,
        resolution=64,
        perturbation=PerturbationConfig(**perturbation),
    )
    with suite.make_env(0) as env:
        return env.reset(seed)


@pytest.fixture(scope="module")
def clean() -> dict:
    return first_obs("Lift")


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ noticeably."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 8).mean())


@pytest.mark.parametrize(
    ("perturbation", "agentview_changes", "wrist_changes"),
    [
        ({"object_colors": True}, (0.001, 0.05), (0.001, 0.1)),  # the cube only
        ({"table_texture": True}, (0.3, 1.0), (0.3, 1.0)),  # most of both views
        ({"camera_jitter": 0.05}, (0.05, 1.0), (0.0, 0.0)),  # agentview only
        ({"lighting": 0.5}, (0.05, 1.0), (0.05, 1.0)),  # the white table saturates
    ],
)
def test_perturbations_change_only_what_they_should(
    clean, perturbation, agentview_changes, wrist_changes
):
    obs = first_obs("Lift", **perturbation)
    # Physics and proprioception are untouched.
    assert np.array_equal(obs["state"], clean["state"])
    for cam, (low, high) in (("agentview", agentview_changes), ("wrist", wrist_changes)):
        changed = _changed(obs["images"][cam], clean["images"][cam])
        assert low <= changed <= high, (cam, changed)


def test_perturbations_are_drawn_from_the_seed(clean):
    kwargs = {"object_colors": True, "table_texture": True, "camera_jitter": 0.03}
    a, b = first_obs("Lift", **kwargs), first_obs("Lift", **kwargs)
    other = first_obs("Lift", SEED + 1, **kwargs)
    for cam in ("agentview", "wrist"):
        assert np.array_equal(a["images"][cam], b["images"][cam])
    assert _changed(a["images"]["agentview"], other["images"]["agentview"]) > 0.1


def test_colours_apply_to_every_scene_object():
    clean = first_obs("Stack")
    painted = first_obs("Stack", object_colors=True)
    # Both cubes (red and green) are recoloured: their pixels change in the agentview.
    assert _changed(painted["images"]["agentview"], clean["images"]["agentview"]) > 0.002
    assert np.array_equal(painted["state"], clean["state"])
