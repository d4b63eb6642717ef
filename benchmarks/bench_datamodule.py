"""Does the DataModule keep the policy fed? Loader samples/s vs the policy's training rate.

    python benchmarks/bench_datamodule.py                       # bc at 128 px on this machine
    python benchmarks/bench_datamodule.py --policy pi0 --image-size 224 --precision bf16-mixed

Records scripted tabletop_spatial demos (128 px mp4 per camera, LeRobot's writer) once into
``outputs/cache/bench_datamodule``, then measures, for each ``--workers`` setting (and with
``--preload``, the dataset decoded into memory once), the train DataLoader's samples/s (video
decoding, resize-with-pad, chunking, collation) after its first batch, and the policy's training samples/s (forward, backward, optimizer step) on
batches already in memory on the device. The loader keeps up when its rate is at least the
policy's. Medians of ``--repeats``. Writes ``results/datamodule_<policy>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from report import write  # noqa: E402

from vlaexp.config.compose import compose_config  # noqa: E402
from vlaexp.data.collect import collect_demonstrations  # noqa: E402
from vlaexp.data.datamodule import LeRobotDataModule  # noqa: E402
from vlaexp.policies.factory import make_policy  # noqa: E402
from vlaexp.sim.factory import make_task_suite  # noqa: E402

CAMERAS = ["agentview", "wrist"]


def dataset(root: Path, episodes_per_task: int) -> Path:
    """The benchmark's dataset, recorded once (a finished one has meta/info.json)."""
    if (root / "meta" / "info.json").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    cfg = compose_config(["task_suite=tabletop_spatial"])
    suite = make_task_suite(cfg.task_suite, CAMERAS)
    collect_demonstrations(suite, root, "bench/tabletop_spatial", CAMERAS, episodes_per_task)
    return root


def datamodule(
    root: Path, args: argparse.Namespace, workers: int, preload: bool = False
) -> LeRobotDataModule:
    dm = LeRobotDataModule(
        repo_id=None,
        root=root,
        cameras=CAMERAS,
        camera_keys={c: f"observation.images.{c}" for c in CAMERAS},
        chunk_size=args.chunk_size,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=workers,
        preload=preload,
    )
    dm.setup("fit")
    return dm


def loader_rate(root: Path, workers: int | str, args: argparse.Namespace) -> float:
    """Samples/s of the train loader over ``--batches`` batches after the first;
    ``workers="preloaded"`` reads the preloaded dataset (decoded once by all CPUs)."""
    preload = workers == "preloaded"
    dm = datamodule(root, args, (os.cpu_count() or 1) if preload else int(workers), preload)
    it = iter(dm.train_dataloader())
    next(it)  # worker start-up and first decode are not the steady state
    start = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        batch = next(it, None)
        if batch is None:  # an epoch ended: the next one starts its workers again
            it = iter(dm.train_dataloader())
            batch = next(it)
        n += len(batch["action"])
    return n / (time.perf_counter() - start)


def policy_rate(root: Path, args: argparse.Namespace, device: torch.device) -> tuple[float, int]:
    """Training samples/s of the policy on one in-memory batch; and its parameter count."""
    dm = datamodule(root, args, workers=0)
    batch = next(iter(dm.train_dataloader()))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    cfg = compose_config(
        [
            f"policy={args.policy}",
            f"policy.image_size={args.image_size}",
            f"policy.chunk_size={args.chunk_size}",
            f"policy.n_action_steps={args.chunk_size}",
        ]
    )
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    policy = make_policy(policy_cfg, dataset_stats=dm.stats).to(device).train()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.precision == "bf16-mixed"
        else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            loss, _ = policy(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: allocator, kernels
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n_params = sum(p.numel() for p in policy.parameters())
    return args.steps * args.batch_size / (time.perf_counter() - start), n_params


def main() -> int:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="bc")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=sorted({0, 1, 2, cpus // 2, cpus} - {0} | {0})
    )
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches")
    parser.add_argument("--preload", action="store_true", help="also time data.preload=true")
    parser.add_argument("--steps", type=int, default=5, help="timed policy steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes-per-task", type=int, default=2)
    parser.add_argument("--root", type=Path, default=ROOT / "outputs/cache/bench_datamodule")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = dataset(args.root, args.episodes_per_task)

    settings = [*args.workers, *(["preloaded"] if args.preload else [])]
    loader: dict = {w: [] for w in settings}
    policy = []
    for repeat in range(args.repeats):
        for w in settings:
            loader[w].append(loader_rate(root, w, args))
            print(f"repeat {repeat} loader workers={w}: {loader[w][-1]:.1f} samples/s", flush=True)
        rate, n_params = policy_rate(root, args, device)
        policy.append(rate)
        print(f"repeat {repeat} policy {args.policy}: {rate:.1f} samples/s", flush=True)

    need = statistics.median(policy)
    results = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": str(device),
        "policy_params": n_params,
        "policy_samples_per_s": {"median": need, "repeats": policy},
        "loader_samples_per_s": {
            str(w): {"median": statistics.median(r), "repeats": r} for w, r in loader.items()
        },
    }
    table = [
        f"Train loader over recorded tabletop_spatial demos (128 px mp4, agentview + wrist) "
        f"prepared at {args.image_size}x{args.image_size}, chunk {args.chunk_size}, batch "
        f"{args.batch_size}; policy `{args.policy}` ({n_params / 1e6:.1f} M parameters) "
        f"training on {device} at precision {args.precision}. Medians of {args.repeats} "
        "repeats, loader and policy measured in the same repeat.",
        "",
        f"Policy training rate: **{need:.1f} samples/s**.",
        "",
        "| loader workers | samples/s | loader / policy |",
        "|---|---|---|",
    ]
    for w, r in loader.items():
        med = statistics.median(r)
        table.append(f"| {w} | {med:.1f} | {med / need:.2f}x |")
    write(f"datamodule_{args.policy}", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
