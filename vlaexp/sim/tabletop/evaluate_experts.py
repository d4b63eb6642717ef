"""Measure the scripted expert's success per task on the fixed evaluation seeds.

    python -m vlaexp.sim.tabletop.evaluate_experts --suites spatial object goal long \
        --episodes 50 --out experiments/tabletop_experts

prints the per-task table and writes ``README.md`` (Markdown, with the command) and
``results.json`` to ``--out``. ``--faults`` adds runs with each expert fault switched on, to
show that the faults make the expert fail; ``--perturbation key=value ...`` evaluates under
scene perturbations (``PerturbationConfig`` fields). Episodes run without rendering: the
expert reads privileged state and images do not change the physics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from vlaexp.config.perturbation import PerturbationConfig
from vlaexp.sim.tabletop.expert import FAULTS, TabletopExpert
from vlaexp.sim.tabletop.suite import TabletopSuite
from vlaexp.sim.tabletop.tasks import DEFAULT_MAX_STEPS, SUITE_NAMES


def make_suite(
    suite: str, fault: str = "none", perturbation: dict[str, Any] | None = None
) -> TabletopSuite:
    """The ``tabletop_<suite>`` suite with its default horizon, ``perturbation`` (field
    overrides of ``PerturbationConfig``) and ``fault`` switched on."""
    fields = dict(perturbation or {})
    if fault != "none":
        fields[fault] = True
    perturbation = PerturbationConfig(**fields)
    return TabletopSuite(
        name=f"tabletop_{suite}",
        max_steps=DEFAULT_MAX_STEPS[suite],
        task_type=suite,
        perturbation=perturbation,
    )


def run_episode(env, expert: TabletopExpert, seed: int) -> dict[str, Any]:
    """One expert episode from ``seed``: success, steps used and the injected fault."""
    obs = env.reset(seed)
    expert.reset()
    result = None
    while result is None or not (result.terminated or result.truncated):
        result = env.step(expert.act(obs))
        obs = result.obs
    return {
        "seed": seed,
        "success": bool(result.terminated),
        "steps": result.info["step"],
        **expert.info(),
    }


def evaluate_task(job: tuple[str, int, int, str, dict[str, Any]]) -> dict[str, Any]:
    """Run the first ``episodes`` evaluation seeds of one task.

    ``job = (suite, task_id, episodes, fault, perturbation)``, one tuple so a process pool
    can map it.
    """
    suite_name, task_id, episodes, fault, perturbation = job
    suite = make_suite(suite_name, fault, perturbation)
    env = suite.make_env(task_id, render=False)
    expert = suite.make_expert(env)
    start = time.perf_counter()
    runs = [run_episode(env, expert, seed) for seed in suite.eval_seeds(task_id)[:episodes]]
    seconds = time.perf_counter() - start
    env.close()
    steps = [r["steps"] for r in runs]
    ok = [r for r in runs if r["success"]]
    return {
        "suite": suite_name,
        "task_id": task_id,
        "instruction": suite.instruction(task_id),
        "fault": fault,
        "episodes": len(runs),
        "successes": len(ok),
        "success_rate": len(ok) / len(runs),
        "faults_injected": sum(r["fault"] == fault for r in runs) if fault != "none" else 0,
        "mean_steps_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
        "max_steps_success": max((r["steps"] for r in ok), default=None),
        "horizon": suite.max_steps,
        "failed_seeds": [r["seed"] for r in runs if not r["success"]],
        "env_steps_per_s": float(sum(steps) / seconds),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    clean = [r for r in results if r["fault"] == "none"]
    lines = [
        "# Scripted expert on the tabletop suites",
        "",
        "Produced by:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cpu_count']} CPUs ({meta['processor']}), mujoco {meta['mujoco']}, "
        f"Python {meta['python']}; {meta['workers']} worker processes; "
        f"wall time {meta['wall_s']:.0f} s.",
        "",
        "Episodes start from each task's fixed evaluation seeds (`TaskSuite.eval_seeds`) and run "
        "until the task's success predicate holds or the suite's horizon (`max_steps`) ends. "
        "No images are rendered: the expert acts from privileged state and rendering does not "
        "change the physics.",
        "",
    ]
    if meta["perturbation"]:
        shown = ", ".join(f"`{k}={v}`" for k, v in meta["perturbation"].items())
        lines += [f"Scene perturbations in every episode: {shown}.", ""]
    if clean:
        lines += [
            "## Summary",
            "",
            "| suite | tasks | episodes/task | min success | mean success "
            "| longest success (steps) | horizon |",
            "|---|---|---|---|---|---|---|",
        ]
        for suite in SUITE_NAMES:
            rows = [r for r in clean if r["suite"] == suite]
            if not rows:
                continue
            rates = [r["success_rate"] for r in rows]
            longest = max((r["max_steps_success"] or 0) for r in rows)
            lines.append(
                f"| {suite} | {len(rows)} | {rows[0]['episodes']} | {_pct(min(rates))} | "
                f"{_pct(float(np.mean(rates)))} | {longest} | {rows[0]['horizon']} |"
            )
        lines += [
            "",
            "## Per task",
            "",
            "| suite | id | instruction | success | mean steps | max steps | failed seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in clean:
            mean = f"{r['mean_steps_success']:.0f}" if r["mean_steps_success"] else "-"
            failed = ", ".join(map(str, r["failed_seeds"])) or "-"
            lines.append(
                f"| {r['suite']} | {r['task_id']} | {r['instruction']} | "
                f"{r['successes']}/{r['episodes']} ({_pct(r['success_rate'])}) | {mean} | "
                f"{r['max_steps_success'] or '-'} | {failed} |"
            )
    faulty = [r for r in results if r["fault"] != "none"]
    if faulty:
        lines += [
            "",
            "## With expert faults",
            "",
            "Each fault switched on alone (`fault_prob=1`). `early_release` only applies to tasks "
            "with a held motion (carry, drawer pull, knob turn); elsewhere the expert runs clean, "
            "so the success column counts only episodes that got the fault.",
            "",
            "| suite | fault | episodes with the fault | success when faulted |",
            "|---|---|---|---|",
        ]
        for suite in SUITE_NAMES:
            for fault in FAULTS:
                rows = [r for r in faulty if r["suite"] == suite and r["fault"] == fault]
                if not rows:
                    continue
                injected = sum(r["faults_injected"] for r in rows)
                # Un-faulted episodes succeed like clean ones; count successes among faulted.
                clean_successes = sum(r["successes"] for r in rows if r["faults_injected"] == 0)
                faulted_successes = sum(r["successes"] for r in rows) - clean_successes
                rate = faulted_successes / injected if injected else float("nan")
                lines.append(f"| {suite} | {fault} | {injected} | {_pct(rate)} |")
    return "\n".join(lines) + "\n"


def parse_perturbation(pairs: list[str]) -> dict[str, Any]:
    """``["distractors=3", "object_colors=true"]`` -> typed ``PerturbationConfig`` overrides."""
    types = {f.name: type(f.default) for f in dataclasses.fields(PerturbationConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise ValueError(
                f"bad --perturbation '{pair}'; use key=value with key in {list(types)}"
            )
        if types[key] is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--perturbation {key} takes true or false, got '{value}'")
            out[key] = value.lower() == "true"
        else:
            out[key] = types[key](value)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", choices=SUITE_NAMES, default=list(SUITE_NAMES))
    parser.add_argument("--episodes", type=int, default=50, help="evaluation seeds per task")
    parser.add_argument("--out", type=Path, default=Path("experiments/tabletop_experts"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--faults", nargs="*", choices=FAULTS, default=[])
    parser.add_argument("--fault-episodes", type=int, default=10, help="seeds per task per fault")
    parser.add_argument(
        "--perturbation", nargs="*", default=[], metavar="KEY=VALUE", help="scene perturbations"
    )
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.fault_episodes < 1:
        parser.error("--episodes and --fault-episodes must be positive")
    try:
        scene = parse_perturbation(args.perturbation)
    except ValueError as err:
        parser.error(str(err))

    jobs = [
        (s, t, args.episodes, "none", scene) for s in args.suites for t in make_suite(s).task_ids
    ]
    jobs += [
        (s, t, args.fault_episodes, f, scene)
        for f in args.faults
        for s in args.suites
        for t in make_suite(s).task_ids
    ]
    start = time.perf_counter()
    results = []
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for r in pool.imap(evaluate_task, jobs):
            results.append(r)
            print(
                f"{r['suite']:8s} {r['task_id']:2d} {r['fault']:13s} "
                f"{r['successes']:3d}/{r['episodes']:<3d} {r['instruction']}",
                flush=True,
            )
    meta = {
        "command": " ".join(
            ["python -m vlaexp.sim.tabletop.evaluate_experts", shlex.join(argv)]
        ).strip(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "workers": args.workers,
        "perturbation": scene,
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
