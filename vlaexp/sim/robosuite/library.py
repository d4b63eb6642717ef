"""The robosuite library, imported quietly and built with vlaexp's fixed settings.

robosuite samples object placements, object sizes and the arm's initial joint noise with
numpy's *global* RNG; :func:`global_numpy_seed` seeds it for one call and then puts the
caller's global state back, so seeding an episode never changes anyone else's random stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

_ROBOSUITE_LOGGER = "robosuite_logs"
# robosuite's physics step; a control step at `fps` must be a whole number of them.
PHYSICS_HZ = 500


class _DropMacroNotice(logging.Filter):
    """Drops robosuite's import-time advice to create a private macro file (nothing is wrong)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "macro" not in record.getMessage()


def import_robosuite() -> ModuleType:
    """``import robosuite`` without its "No private macro file found!" notices."""
    logger = logging.getLogger(_ROBOSUITE_LOGGER)
    if not any(isinstance(f, _DropMacroNotice) for f in logger.filters):
        logger.addFilter(_DropMacroNotice())
    import robosuite

    return robosuite


@contextmanager
def global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed ``np.random`` from ``seed`` (any non-negative int) inside the block only."""
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence(int(seed)).generate_state(4))
    try:
        yield
    finally:
        np.random.set_state(saved)


def make_panda_env(env_name: str, fps: int, build_seed: int) -> Any:
    """A robosuite ``env_name`` env with a Panda arm and OSC_POSE that never renders itself.

    ``build_seed`` fixes what robosuite samples while building the model (Lift's cube size).
    The env keeps one model for its lifetime (``hard_reset=False``: a reset re-samples poses,
    not the model), and never ends an episode itself (``ignore_done``): the caller counts steps.
    """
    robosuite = import_robosuite()
    with global_numpy_seed(build_seed):
        return robosuite.make(
            env_name,
            robots="Panda",
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            reward_shaping=False,
            control_freq=fps,
            ignore_done=True,
            hard_reset=False,
        )
