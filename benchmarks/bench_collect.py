"""How long does recording scripted demonstrations take, writing in line or in the background?

    python benchmarks/bench_collect.py                    # 8 demos of one task, 2 workers, 3 repeats
    python benchmarks/bench_collect.py --episodes 24 --workers 12 --repeats 3   # a GPU host's cores

``collect_demonstrations`` rolls the expert out in env worker processes, in lockstep batches,
and writes each finished episode into the LeRobotDataset. ``in_line`` writes as it used to: in
the main thread, PNG frames one after another, while the workers wait. ``background`` is the
default now: one writer thread (:class:`vlaexp.data.collect.BackgroundWriter`) and LeRobot's
image-writer threads. Each measurement records ``tabletop_spatial`` at 128 px, agentview +
wrist, in a fresh process, the modes alternating. Reports the medians of ``--repeats`` and
their ratio; writes ``results/collect.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

MODES = ("in_line", "background")
CAMERAS = ["agentview", "wrist"]


def one(mode: str, episodes: int, workers: int) -> dict[str, float]:
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
            n_workers=workers, background_writing=mode == "background",
        )  # fmt: skip
        return {"seconds": time.perf_counter() - start, "episodes": summary["episodes"]}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8, help="demos of task 0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # a child's measurement
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.episodes, args.workers)))
        return 0
    from report import write

    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for repeat in range(args.repeats):
        for mode in MODES:
            command = [sys.executable, __file__, "--one", mode]
            command += ["--episodes", str(args.episodes), "--workers", str(args.workers)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {repeat} {mode}: {runs[mode][-1]}", flush=True)
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    ratio = med["background"] / med["in_line"]
    results = {
        "settings": vars(args) | {"cpus": os.cpu_count()},
        "median_seconds": med,
        "background_over_in_line": ratio,
        "runs": runs,
    }
    table = [
        f"Recording {args.episodes} expert demos of `tabletop_spatial` task 0 (128 px, agentview "
        f"+ wrist, PNG frames) with {args.workers} env workers on {os.cpu_count()} CPUs, each in "
        f"a fresh process; medians of {args.repeats} repeats, the modes alternating.",
        "",
        "| writing | seconds | per demo (s) |",
        "|---|---|---|",
        *(f"| {m} | {s:.1f} | {s / args.episodes:.2f} |" for m, s in med.items()),
        "",
        f"background / in line: {ratio:.2f}",
    ]
    write("collect", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
