"""How long does recording scripted demonstrations take: writing in line, in a background
thread, or in several processes?

    python benchmarks/bench_collect.py                    # 8 demos of one task, 2 workers, 3 repeats
    python benchmarks/bench_collect.py --episodes 48 --workers 24 --writers 4   # a GPU host's cores

``collect_demonstrations`` rolls the expert out in env worker processes, in lockstep batches,
and writes each finished episode into the LeRobotDataset. ``in_line`` writes in the main
thread, PNG frames one after another, while the workers wait. ``background``: one writer
thread (:class:`vlaexp.data.collect.BackgroundWriter`) and LeRobot's image-writer threads.
``shares``: ``--writers`` processes, each recording a contiguous share of the demos with its
share of the env workers and writing it in the background, merged at the end
(``data.collect.writers``). Each measurement records ``tabletop_spatial`` at 128 px,
agentview + wrist, in a fresh process, the modes alternating. Reports the medians of
``--repeats`` and their ratios to ``in_line``; writes ``results/collect.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

MODES = ("in_line", "background", "shares")
CAMERAS = ["agentview", "wrist"]


def one(mode: str, episodes: int, workers: int, writers: int) -> dict[str, float]:
    """One recording in this process: seconds and the episodes written."""
    from omegaconf import OmegaConf

    import vlaexp.data.collect as collect
    from vlaexp.config.compose import compose_config
    from vlaexp.sim.workers import SuiteSpec

    suite = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=128"]).task_suite
    spec = SuiteSpec(OmegaConf.to_container(suite, resolve=True), CAMERAS)
    out = Path(tempfile.mkdtemp()) / "demos"
    try:
        start = time.perf_counter()
        summary = collect.collect_demonstrations(
            spec, out, "bench/collect", CAMERAS, episodes, task_ids=[0], use_videos=False,
            n_workers=workers, background_writing=mode != "in_line",
            writers=writers if mode == "shares" else 1,
        )  # fmt: skip
        return {"seconds": time.perf_counter() - start, "episodes": summary["episodes"]}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="demos of task 0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=2, help="processes of the shares mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # a child's measurement
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.episodes, args.workers, args.writers)))
        return 0
    from report import fresh_process_runs, write

    sizes = ["--episodes", str(args.episodes), "--workers", str(args.workers)]
    runs = fresh_process_runs(
        __file__, MODES, [*sizes, "--writers", str(args.writers)], args.repeats
    )
    # without it every fresh process compiles its imports anew (seconds here)
    bytecode_cache = not os.environ.get("PYTHONDONTWRITEBYTECODE")
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    ratios = {m: med[m] / med["in_line"] for m in MODES}
    results = {
        "settings": vars(args) | {"cpus": os.cpu_count(), "bytecode_cache": bytecode_cache},
        "median_seconds": med,
        "over_in_line": ratios,
        "runs": runs,
    }
    table = [
        f"Recording {args.episodes} expert demos of `tabletop_spatial` task 0 (128 px, agentview "
        f"+ wrist, PNG frames) with {args.workers} env workers on {os.cpu_count()} CPUs "
        f"(`shares`: {args.writers} processes), each in a fresh process; medians of "
        f"{args.repeats} repeats, the modes alternating; Python bytecode cache "
        f"{'on' if bytecode_cache else 'off (every process compiles its imports)'}.",
        "",
        "| writing | seconds | per demo (s) | vs in line |",
        "|---|---|---|---|",
        *(f"| {m} | {s:.1f} | {s / args.episodes:.2f} | {ratios[m]:.2f} |" for m, s in med.items()),
    ]
    write("collect", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
