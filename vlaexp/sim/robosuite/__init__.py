"""robosuite tasks (Lift, Stack, PickPlaceCan) with a Panda arm and OSC_POSE under vlaexp's
sim contract, rendered through ``mujoco.Renderer``. Entry point: :class:`RobosuiteSuite`.

robosuite itself is imported only when an env is built, so importing this package is cheap.
"""

import os

# Headless rendering; mujoco picks its GL backend when first imported, so this must come
# before any module of this package imports it.
os.environ.setdefault("MUJOCO_GL", "egl")

from vlaexp.sim.robosuite.suite import RobosuiteSuite

__all__ = ["RobosuiteSuite"]
