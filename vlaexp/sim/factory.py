"""Build a TaskSuite from its `task_suite` config node."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlaexp.errors import VlaexpError
from vlaexp.sim.base import TaskSuite


def make_task_suite(cfg: DictConfig, cameras: Sequence[str]) -> TaskSuite:
    """The suite class named by ``cfg._target_``, built with the config's fields + ``cameras``.

    Simulators are built here, in the calling process: never create one before forking.
    A :class:`~vlaexp.errors.VlaexpError` raised by the suite's constructor reaches the
    caller as it is (Hydra would wrap it), so its message names the setting to change.
    """
    try:
        return instantiate(cfg, cameras=list(cameras), _convert_="object")
    except InstantiationException as e:
        if isinstance(e.__cause__, VlaexpError):
            raise e.__cause__ from None
        raise
