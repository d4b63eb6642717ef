"""How long does ``data.preload`` wait for its workers? spawn against forkserver.

    python benchmarks/bench_preload_start.py                  # 4 workers, 3 repeats
    python benchmarks/bench_preload_start.py --workers 12 --repeats 5

The preload pass (:class:`vlaexp.data.datamodule.PreloadedDataset`) decodes a dataset once
with DataLoader workers. With ``spawn`` each worker imports torch, LeRobot and vlaexp anew
before its first batch; with ``forkserver`` (the default) one server process imports them and
forks the workers. Each measurement runs in a fresh process (a forkserver outlives its first
use), the start methods alternating, on ``bench_datamodule.py``'s recorded dataset (made on the
first run). Reports the seconds to the first batch and to the whole pass, medians of
``--repeats``; writes ``results/preload_start.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")

METHODS = ("spawn", "forkserver")


def one(root: Path, method: str, workers: int) -> dict[str, float]:
    """A single preload pass in this process: seconds to the first batch and to the end."""
    from bench_datamodule import CAMERAS
    from torch.utils.data import DataLoader

    from vlaexp.data.datamodule import LeRobotDataModule, preload_worker_context

    dm = LeRobotDataModule(
        repo_id=None,
        root=root,
        cameras=CAMERAS,
        camera_keys={c: f"observation.images.{c}" for c in CAMERAS},
        chunk_size=10,
        image_size=128,
        batch_size=64,
        num_workers=0,
        preload=False,
    )
    dm.setup("fit")
    source = dm.datasets["train"]
    start = time.perf_counter()
    loader = DataLoader(
        source,
        batch_size=64,
        num_workers=workers,
        multiprocessing_context=preload_worker_context(workers, method),
    )
    first, n = None, 0
    for batch in loader:  # what PreloadedDataset iterates, without storing it
        first = first if first is not None else time.perf_counter() - start
        n += len(batch["action"])
    return {"first_batch_s": first, "total_s": time.perf_counter() - start, "samples": n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--root", type=Path, default=ROOT / "outputs/cache/bench_datamodule")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # a child's measurement
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.root, args.one, args.workers)))
        return 0
    from bench_datamodule import dataset
    from report import fresh_process_runs, write

    root = dataset(args.root, args.episodes_per_task)
    runs = fresh_process_runs(
        __file__, METHODS, ["--workers", str(args.workers), "--root", str(root)], args.repeats
    )
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("first_batch_s", "total_s")}
        for m, rs in runs.items()
    }
    results = {
        "settings": {
            "workers": args.workers,
            "repeats": args.repeats,
            "root": str(root),
            "cpus": os.cpu_count(),
        },
        "samples": runs[METHODS[0]][0]["samples"],
        "median": med,
        "runs": runs,
    }
    table = [
        f"The preload pass over {results['samples']} train samples of `bench_datamodule.py`'s "
        f"dataset (128 px, agentview + wrist) with {args.workers} workers on {os.cpu_count()} "
        f"CPUs, each in a fresh process; medians of {args.repeats} repeats, the methods alternating.",
        "",
        "| start method | first batch (s) | whole pass (s) |",
        "|---|---|---|",
        *(f"| {m} | {v['first_batch_s']:.2f} | {v['total_s']:.2f} |" for m, v in med.items()),
    ]
    write("preload_start", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
