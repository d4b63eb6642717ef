"""Build a TaskSuite from its `task_suite` config node."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlaexp.sim.base import TaskSuite


def make_task_suite(cfg: DictConfig, cameras: Sequence[str]) -> TaskSuite:
    """The suite class named by ``cfg._target_``, built with the config's fields + ``cameras``.

    Simulators are built here, in the calling process: never create one before forking.
    """
    return instantiate(cfg, cameras=list(cameras), _convert_="object")
