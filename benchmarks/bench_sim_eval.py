"""Closed-loop evaluation throughput of the SimRunner with 1 and 2 env processes.

    python benchmarks/bench_sim_eval.py          # tabletop_spatial, 128 px, both cameras

Each repeat evaluates the same episodes (``--tasks`` x ``--episodes`` fixed eval seeds) with
two actors: the scripted expert (acts inside the env workers) and a random policy (acts in
the main process on the batch of observations, as a learned policy does; its episodes run
to ``--max-steps``). Both ``n_envs`` settings run inside each repeat, side by side, so the
speed-up is a ratio of medians taken under the same machine load. Writes
``results/sim_eval_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from omegaconf import OmegaConf
from report import write

from vlaexp.config.compose import compose_config
from vlaexp.sim.actors import RandomPolicy, ScriptedExpert
from vlaexp.sim.runner import SimRunner
from vlaexp.sim.workers import SuiteSpec

N_ENVS = (1, 2)


def time_run(spec: SuiteSpec, actor, n_envs: int, args: argparse.Namespace) -> dict:
    """One SimRunner.run: wall seconds (worker start-up included), env steps, success."""
    with tempfile.TemporaryDirectory() as out:
        runner = SimRunner(
            spec,
            out,
            n_episodes=args.episodes,
            task_ids=list(range(args.tasks)),
            n_videos=0,
            max_steps=args.max_steps,
            n_envs=n_envs,
        )
        start = time.perf_counter()
        metrics = runner.run(actor)
        seconds = time.perf_counter() - start
        rows = json.loads((Path(out) / "eval_info.json").read_text())["per_episode"]
    steps = sum(r["steps"] for r in rows)
    return {
        "seconds": seconds,
        "episodes": len(rows),
        "steps": steps,
        "steps_per_s": steps / seconds,
        "pc_success": metrics["eval/pc_success"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="spatial", help="tabletop task type")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=2, help="the first N tasks")
    parser.add_argument("--episodes", type=int, default=10, help="per task")
    parser.add_argument("--max-steps", type=int, default=220)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = compose_config(
        [f"task_suite=tabletop_{args.suite}", f"task_suite.resolution={args.resolution}"]
    )
    spec = SuiteSpec(OmegaConf.to_container(cfg.task_suite, resolve=True), ["agentview", "wrist"])
    actors = {"scripted expert": ScriptedExpert, "random policy": lambda: RandomPolicy(seed=0)}
    runs: dict[str, dict[int, list[dict]]] = {a: {n: [] for n in N_ENVS} for a in actors}
    for repeat in range(args.repeats):
        for name, make in actors.items():
            for n_envs in N_ENVS:
                r = time_run(spec, make(), n_envs, args)
                runs[name][n_envs].append(r)
                print(f"repeat {repeat} {name:15s} n_envs={n_envs}: {r}", flush=True)

    results, table = (
        {},
        [
            f"SimRunner on tabletop_{args.suite}, {args.tasks} tasks x {args.episodes} episodes, "
            f"{args.resolution}x{args.resolution} agentview + wrist rendered every step, horizon "
            f"{args.max_steps}; median of {args.repeats} repeats, both settings in every repeat. "
            "Wall time includes spawning the env processes.",
            "",
            "| actor | n_envs | env steps | wall s | env steps/s | speed-up vs 1 | success |",
            "|---|---|---|---|---|---|---|",
        ],
    )
    for name in actors:
        base = statistics.median(r["steps_per_s"] for r in runs[name][1])
        results[name] = {}
        for n_envs in N_ENVS:
            rs = runs[name][n_envs]
            med = statistics.median(r["steps_per_s"] for r in rs)
            results[name][n_envs] = {
                "median_steps_per_s": med,
                "median_seconds": statistics.median(r["seconds"] for r in rs),
                "speedup_vs_1": med / base,
                "repeats": rs,
            }
            table.append(
                f"| {name} | {n_envs} | {rs[0]['steps']} | "
                f"{results[name][n_envs]['median_seconds']:.1f} | {med:.0f} | "
                f"{med / base:.2f}x | {rs[0]['pc_success']:.0f}% |"
            )
    write(
        "sim_eval_scaling",
        {"settings": vars(args), "results": results},
        table,
        notes=f"Load average after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
