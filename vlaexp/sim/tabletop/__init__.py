"""An offline LIBERO-like benchmark in pure MuJoCo: four suites of tabletop tasks built from
primitives, with scripted experts and perturbations. Needs only ``mujoco`` and ``numpy``.

Suites (``task_suite=tabletop_spatial | tabletop_object | tabletop_goal | tabletop_long``),
ten tasks each, defined in ``tasks.py``::

    from vlaexp.sim.tabletop.suite import TabletopSuite

    suite = TabletopSuite(name="tabletop_goal", max_steps=300, task_type="goal",
                          cameras=["agentview", "wrist"], resolution=128)
    env = suite.make_env(task_id=0)            # TabletopEnv: LIBERO's obs/action contract
    expert = suite.make_expert(env)            # scripted, from privileged state
    obs = env.reset(suite.eval_seeds(0)[0])
    expert.reset()
    result = env.step(expert.act(obs))         # StepResult(obs, reward, terminated, ...)
    env.close()

Modules: ``scene`` (MJCF builder), ``objects`` / ``fixtures`` (primitive shapes),
``layout`` (seeded placement), ``tasks`` (the 40 tasks), ``predicates`` (success tests),
``env``, ``skills`` / ``expert`` (scripted expert and its faults), ``perturb`` (scene
perturbations), ``suite``, ``evaluate_experts`` (per-task expert success table, a CLI).
Speed: ``benchmarks/bench_tabletop.py``.
"""

import os

# Headless rendering; mujoco picks its GL backend when first imported, so this must come
# before any module of this package imports it.
os.environ.setdefault("MUJOCO_GL", "egl")
