"""Env steps per second of the robosuite suites, per process, physics + two cameras.

    python benchmarks/bench_robosuite.py          # 128x128, agentview + wrist, all three

Each repeat builds the env, resets it to an evaluation seed and drives it with the scripted
expert, timing only ``env.step`` (robosuite's controller and physics, vlaexp's state, both
camera renders through ``mujoco.Renderer``). The expert's own time is excluded; a new
episode starts when one ends. Reports the median over repeats, a physics-only run (no
rendering), and robosuite's own offscreen camera path for comparison (``use_camera_obs``,
the way robosuite and LIBERO render by default), and writes ``robosuite_speed.json`` /
``.md`` to ``--out``.
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

from vlaexp.sim.robosuite.evaluate_experts import make_suite
from vlaexp.sim.robosuite.library import global_numpy_seed, import_robosuite
from vlaexp.sim.robosuite.tasks import ENV_NAMES


def steps_per_second(env_name: str, steps: int, resolution: int, render: bool) -> float:
    """Time ``steps`` expert-driven ``env.step`` calls; return steps/s."""
    suite = make_suite(env_name)
    suite.resolution = resolution
    env = suite.make_env(0, render=render)
    expert = suite.make_expert(env)
    seeds = iter(suite.eval_seeds(0))
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


def robosuite_offscreen_steps_per_second(env_name: str, steps: int, resolution: int) -> float:
    """robosuite stepping with its own offscreen renderer producing both cameras."""
    robosuite = import_robosuite()
    with global_numpy_seed(0):
        env = robosuite.make(
            env_name,
            robots="Panda",
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False,
            has_offscreen_renderer=True,
            use_camera_obs=True,
            camera_names=["agentview", "robot0_eye_in_hand"],
            camera_heights=resolution,
            camera_widths=resolution,
            control_freq=20,
            ignore_done=True,
            hard_reset=False,
        )
        env.reset()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-0.3, 0.3, 7))
    seconds = time.perf_counter() - start
    env.close()
    return steps / seconds


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
    parser.add_argument("--envs", nargs="+", choices=ENV_NAMES, default=list(ENV_NAMES))
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=150, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--baseline-steps", type=int, default=40, help="steps of robosuite's own renderer (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    results = {}
    for env_name in args.envs:
        full = [
            steps_per_second(env_name, args.steps, args.resolution, True)
            for _ in range(args.repeats)
        ]
        physics = [
            steps_per_second(env_name, args.steps, args.resolution, False)
            for _ in range(args.repeats)
        ]
        baseline = (
            robosuite_offscreen_steps_per_second(env_name, args.baseline_steps, args.resolution)
            if args.baseline_steps > 0
            else None
        )
        full_med, physics_med = statistics.median(full), statistics.median(physics)
        results[env_name] = {
            "steps_per_s": full_med,
            "steps_per_s_repeats": full,
            "physics_only_steps_per_s": physics_med,
            "physics_only_repeats": physics,
            "render_ms_per_step": 1000 * (1 / full_med - 1 / physics_med),
            "robosuite_offscreen_steps_per_s": baseline,
        }
        print(
            f"{env_name:13s} {full_med:6.1f} steps/s (physics only {physics_med:6.1f}; render "
            f"{results[env_name]['render_ms_per_step']:.1f} ms/step; robosuite offscreen "
            f"{baseline or float('nan'):.1f})",
            flush=True,
        )
    meta = {
        "command": shlex.join(["python", "benchmarks/bench_robosuite.py", *argv]),
        "resolution": args.resolution,
        "cameras": ["agentview", "wrist"],
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "baseline_steps": args.baseline_steps,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "robosuite": import_robosuite().__version__,
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
    }
    lines = [
        "# robosuite env speed",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"One process, {args.resolution}x{args.resolution} RGB from both cameras (agentview + "
        f"wrist) every step through `mujoco.Renderer`, shadows and reflections off, "
        f"MUJOCO_GL={meta['mujoco_gl']} (Mesa software GL). Median of {args.repeats} repeats of "
        f"{args.steps} expert-driven steps at 20 Hz, timing `env.step` only. The last column "
        "is robosuite's own offscreen path (`use_camera_obs=True`, the same two cameras, "
        f"{args.baseline_steps} steps of small random actions).",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta['cpu_model']}), shared with other jobs "
        f"(load average before/after {load_before[0]:.2f} / {meta['loadavg_after'][0]:.2f}), "
        f"so the numbers are noisy; robosuite {meta['robosuite']}, mujoco {meta['mujoco']}, "
        f"numpy {meta['numpy']}, Python {meta['python']}.",
        "",
        "| suite | env steps/s (physics + 2 cameras) | physics only | render ms/step "
        "| robosuite offscreen steps/s |",
        "|---|---|---|---|---|",
    ]
    for env_name, r in results.items():
        base = r["robosuite_offscreen_steps_per_s"]
        lines.append(
            f"| {env_name} | {r['steps_per_s']:.1f} | {r['physics_only_steps_per_s']:.1f} | "
            f"{r['render_ms_per_step']:.1f} | {f'{base:.1f}' if base else '-'} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robosuite_speed.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1)
    )
    (args.out / "robosuite_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
