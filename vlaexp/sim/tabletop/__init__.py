"""An offline LIBERO-like benchmark in pure MuJoCo: four suites of tabletop tasks built from
primitives, with scripted experts and perturbations. Entry point: :class:`TabletopSuite`
(``vlaexp.sim.tabletop.suite``)."""
