"""Measure the robosuite scripted expert's success on the fixed evaluation seeds.

    python -m vlaexp.sim.robosuite.evaluate_experts --episodes 50 \
        --faults early_release wrong_target freeze --out experiments/robosuite_experts

prints the table and writes ``README.md`` (Markdown, with the command) and ``results.json``
to ``--out``. ``--faults`` adds runs with each expert fault switched on (skipping a fault a
task cannot have), with the failure modes the env reports. Episodes run without rendering:
the expert reads privileged state and images do not change the physics.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.sim.robosuite.env import RobosuiteEnv
from vlaexp.sim.robosuite.expert import FAULTS, RobosuiteExpert
from vlaexp.sim.robosuite.library import import_robosuite
from vlaexp.sim.robosuite.suite import RobosuiteSuite
from vlaexp.sim.robosuite.tasks import DEFAULT_MAX_STEPS, ENV_NAMES, TASKS


def make_suite(env_name: str, fault: str = "none", action_noise: float = 0.0) -> RobosuiteSuite:
    """The suite of ``env_name`` with its default horizon and ``fault`` switched on."""
    perturbation = PerturbationConfig(action_noise=action_noise)
    if fault != "none":
        setattr(perturbation, fault, True)
    return RobosuiteSuite(
        name=f"robosuite_{env_name}",
        max_steps=DEFAULT_MAX_STEPS[env_name],
        env_name=env_name,
        perturbation=perturbation,
    )


def run_episode(env: RobosuiteEnv, expert: RobosuiteExpert, seed: int) -> dict[str, Any]:
    """One expert episode from ``seed``: success, steps used, failure mode, injected fault."""
    obs = env.reset(seed)
    expert.reset()
    result = None
    while result is None or not (result.terminated or result.truncated):
        result = env.step(expert.act(obs))
        obs = result.obs
    success = bool(result.terminated)
    return {
        "seed": seed,
        "success": success,
        "steps": result.info["step"],
        "failure_mode": None if success else env.failure_mode(),
        **expert.info(),
    }


def evaluate(job: tuple[str, int, str]) -> dict[str, Any]:
    """Run the first ``episodes`` evaluation seeds of one env with one fault.

    ``job = (env_name, episodes, fault)``, one tuple so a process pool can map it.
    """
    env_name, episodes, fault = job
    suite = make_suite(env_name, fault)
    env = suite.make_env(0, render=False)
    expert = suite.make_expert(env)
    start = time.perf_counter()
    runs = [run_episode(env, expert, seed) for seed in suite.eval_seeds(0)[:episodes]]
    seconds = time.perf_counter() - start
    env.close()
    ok = [r for r in runs if r["success"]]
    modes = collections.Counter(r["failure_mode"] for r in runs if not r["success"])
    return {
        "env_name": env_name,
        "instruction": suite.instruction(0),
        "fault": fault,
        "episodes": len(runs),
        "successes": len(ok),
        "success_rate": len(ok) / len(runs),
        "mean_steps_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
        "max_steps_success": max((r["steps"] for r in ok), default=None),
        "horizon": suite.max_steps,
        "failed_seeds": [r["seed"] for r in runs if not r["success"]],
        "failure_modes": dict(sorted(modes.items())),
        "env_steps_per_s": float(sum(r["steps"] for r in runs) / seconds),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Scripted expert on the robosuite tasks",
        "",
        "Question: does the privileged-state expert solve robosuite Lift, Stack and PickPlaceCan "
        "(Panda, OSC_POSE) reliably enough to collect demonstrations, and do its faults make it "
        "fail in the way their failure modes say?",
        "",
        "Produced by:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta['processor']}), robosuite "
        f"{meta['robosuite']}, mujoco {meta['mujoco']}, Python {meta['python']}; "
        f"{meta['workers']} worker processes; wall time {meta['wall_s']:.0f} s (CPUs shared "
        "with other jobs, so times are noisy).",
        "",
        "Episodes start from the suite's fixed evaluation seeds (`TaskSuite.eval_seeds(0)`) and "
        "run until robosuite's success check holds or the horizon (`max_steps`) ends. No images "
        "are rendered: the expert acts from privileged state and rendering does not change "
        "the physics.",
        "",
        "## Clean expert",
        "",
        "| env | instruction | success | mean steps | max steps | horizon | failed seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["fault"] != "none":
            continue
        mean = f"{r['mean_steps_success']:.0f}" if r["mean_steps_success"] else "-"
        failed = ", ".join(map(str, r["failed_seeds"])) or "-"
        lines.append(
            f"| {r['env_name']} | {r['instruction']} | {r['successes']}/{r['episodes']} "
            f"({_pct(r['success_rate'])}) | {mean} | {r['max_steps_success'] or '-'} | "
            f"{r['horizon']} | {failed} |"
        )
    faulty = [r for r in results if r["fault"] != "none"]
    if faulty:
        lines += [
            "",
            "## With expert faults",
            "",
            "Each fault switched on alone; failure modes as `RobosuiteEnv.failure_mode()` "
            "classifies them from privileged state at the end of the episode.",
            "",
            "| env | fault | episodes | success | failure modes |",
            "|---|---|---|---|---|",
        ]
        for r in faulty:
            modes = ", ".join(f"{k}: {v}" for k, v in r["failure_modes"].items()) or "-"
            lines.append(
                f"| {r['env_name']} | {r['fault']} | {r['episodes']} | "
                f"{r['successes']}/{r['episodes']} | {modes} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", choices=ENV_NAMES, default=list(ENV_NAMES))
    parser.add_argument("--episodes", type=int, default=50, help="evaluation seeds per env")
    parser.add_argument("--out", type=Path, default=Path("experiments/robosuite_experts"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--faults", nargs="*", choices=FAULTS, default=[])
    parser.add_argument("--fault-episodes", type=int, default=10, help="seeds per env per fault")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.fault_episodes < 1 or args.workers < 1:
        parser.error("--episodes, --fault-episodes and --workers must be positive")

    jobs = [(e, args.episodes, "none") for e in args.envs]
    jobs += [
        (e, args.fault_episodes, f)
        for e in args.envs
        for f in args.faults
        if f != "wrong_target" or TASKS[e].wrong_target is not None
    ]
    start = time.perf_counter()
    # Simulators are built inside the workers; spawn keeps them clear of the parent's state.
    with multiprocessing.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
        results = pool.map(evaluate, jobs)
    import mujoco

    robosuite = import_robosuite()
    meta = {
        "command": shlex.join(["python", "-m", "vlaexp.sim.robosuite.evaluate_experts", *argv]),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "robosuite": robosuite.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "workers": min(args.workers, len(jobs)),
        "wall_s": time.perf_counter() - start,
    }
    markdown = render_markdown(results, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text(markdown)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
