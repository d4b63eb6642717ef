"""Env steps per second of the tabletop suites, per process, physics + rendering.

    python benchmarks/bench_tabletop.py            # 128x128, agentview + wrist, all suites

Each repeat builds one task's env (repeats cycle through the suite's tasks), resets it to an
evaluation seed and drives it with the scripted expert, timing only ``env.step`` (physics,
success predicates and both camera renders). The expert's own time is excluded and resets
start a new episode when one ends. Reports the median over repeats, plus a physics-only run
(no rendering) and the render cost per step, and writes ``tabletop_speed.json`` / ``.md`` to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

# Measure this checkout's code, installed or not; render headless (mujoco reads MUJOCO_GL
# when it is first imported).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from vlaexp.sim.tabletop.evaluate_experts import make_suite
from vlaexp.sim.tabletop.tasks import SUITE_NAMES


def steps_per_second(suite_name: str, task_id: int, steps: int, resolution: int, render: bool):
    """Time ``steps`` expert-driven ``env.step`` calls of one task; return steps/s."""
    suite = make_suite(suite_name)
    suite.resolution = resolution
    env = suite.make_env(task_id, render=render)
    expert = suite.make_expert(env)
    seeds = iter(suite.eval_seeds(task_id))
    obs = env.reset(next(seeds))
    expert.reset()
    stepping = 0.0
    for _ in range(steps):
        action = expert.act(obs)
        start = time.perf_counter()
        result = env.step(action)
        stepping += time.perf_counter() - start
        obs = result.obs
        if result.terminated or result.truncated:
            obs = env.reset(next(seeds))
            expert.reset()
    env.close()
    return steps / stepping


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", choices=SUITE_NAMES, default=list(SUITE_NAMES))
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    results = {}
    for suite in args.suites:
        n_tasks = len(make_suite(suite).task_ids)
        tasks = [r % n_tasks for r in range(args.repeats)]
        full = [steps_per_second(suite, t, args.steps, args.resolution, True) for t in tasks]
        physics = [steps_per_second(suite, t, args.steps, args.resolution, False) for t in tasks]
        full_med, physics_med = statistics.median(full), statistics.median(physics)
        results[suite] = {
            "steps_per_s": full_med,
            "steps_per_s_repeats": full,
            "physics_only_steps_per_s": physics_med,
            "physics_only_repeats": physics,
            "render_ms_per_step": 1000 * (1 / full_med - 1 / physics_med),
            "tasks": tasks,
        }
        print(
            f"{suite:8s} {full_med:7.1f} steps/s (physics only {physics_med:7.1f}; "
            f"render {results[suite]['render_ms_per_step']:.2f} ms/step)",
            flush=True,
        )
    meta = {
        "command": " ".join(["python benchmarks/bench_tabletop.py", shlex.join(argv)]).strip(),
        "resolution": args.resolution,
        "cameras": ["agentview", "wrist"],
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
    }
    lines = [
        "# Tabletop env speed",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"One process, {args.resolution}x{args.resolution} RGB from both cameras (agentview + "
        f"wrist) every step, shadows and reflections off, MUJOCO_GL={meta['mujoco_gl']}. "
        f"Median of {args.repeats} repeats of {args.steps} expert-driven steps, timing "
        "`env.step` only.",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), mujoco {meta['mujoco']}, "
        f"numpy {meta['numpy']}, Python {meta['python']}; load average before/after "
        f"{load_before[0]:.2f} / {meta['loadavg_after'][0]:.2f}.",
        "",
        "| suite | env steps/s (physics + 2 cameras) | physics only | render ms/step |",
        "|---|---|---|---|",
    ]
    for suite, r in results.items():
        lines.append(
            f"| {suite} | {r['steps_per_s']:.0f} | {r['physics_only_steps_per_s']:.0f} | "
            f"{r['render_ms_per_step']:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tabletop_speed.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    (args.out / "tabletop_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
