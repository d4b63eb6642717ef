"""An offline LIBERO-like benchmark in pure MuJoCo: four suites of tabletop tasks built from
primitives, with scripted experts and perturbations. Entry point: :class:`TabletopSuite`
(``vlaexp.sim.tabletop.suite``)."""

import os

# Headless rendering; mujoco picks its GL backend when first imported, so this must come
# before any module of this package imports it.
os.environ.setdefault("MUJOCO_GL", "egl")
