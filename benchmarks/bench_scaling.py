"""Data-parallel scaling of a policy's training step on the shared Trainer (issue 9).

    python benchmarks/bench_scaling.py --trainer gpu  --devices 1 --name scaling_single
    python benchmarks/bench_scaling.py --trainer ddp  --devices 2 --name scaling_ddp2
    python benchmarks/bench_scaling.py --trainer fsdp --devices 2 --name scaling_fsdp2
    python benchmarks/bench_scaling.py --policy pi05_tiny --trainer fsdp --devices 2 \\
        --check-checkpoint --name fsdp_checkpoint          # save, load on one GPU, resume

The Trainer is vlaexp's (``build_trainer`` with the ``trainer=`` preset, the policy's FSDP
blocks), fed synthetic batches of the policy's contract (two 224x224 cameras, a task
string, state, an action chunk) so data loading is not what is timed. Every step is timed
between CUDA synchronizations after ``--warmup`` steps; the figures are medians. The
policy is built in fp32 (``policy.dtype=float32``) under bf16-mixed autocast in every mode,
so single-GPU, DDP and FSDP do the same arithmetic; with gradient checkpointing on.
Lightning's launcher re-runs this script once per extra device; rank 0 writes
``results/<name>.{json,md}`` with the per-rank peak memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import numpy as np
import torch
from report import write
from torch.utils.data import DataLoader, Dataset

from vlaexp.config.compose import resolved_run_config
from vlaexp.policies.factory import load_pretrained, make_policy
from vlaexp.training.trainer import build_trainer


class SyntheticBatches(Dataset):
    """Random samples in the policy's batch contract (fixed by index, so reproducible)."""

    def __init__(self, cfg, n: int) -> None:
        self.cfg, self.n = cfg, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        c, s = self.cfg, self.cfg.image_size
        item = {
            f"observation.images.{cam}": torch.rand(3, s, s, generator=g) * 2 - 1
            for cam in c.cameras
        }
        item["observation.state"] = torch.randn(c.state_dim, generator=g)
        item["action"] = torch.randn(c.chunk_size, c.action_dim, generator=g)
        item["action_is_pad"] = torch.zeros(c.chunk_size, dtype=torch.bool)
        item["task"] = "pick up the red block and place it on the plate"
        return item


def stats(cfg) -> dict:
    def one(dim: int) -> dict:
        return {
            "mean": np.zeros(dim),
            "std": np.ones(dim),
            "min": -np.ones(dim) * 3,
            "max": np.ones(dim) * 3,
            "q01": -np.ones(dim) * 2,
            "q99": np.ones(dim) * 2,
        }

    return {"observation.state": one(cfg.state_dim), "action": one(cfg.action_dim)}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0


def build(cfg):
    """The policy, initialized on this rank's GPU (minutes faster than on the CPU at full
    size; Lightning's launcher sets LOCAL_RANK for the processes it starts)."""
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        return make_policy(cfg.policy, dataset_stats=stats(cfg.policy))


class StepTimer(pl.Callback):
    """Wall time of each optimizer step between CUDA synchronizations, and peak memory."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t = warmup, [], 0.0

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.warmup and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        sync()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        sync()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default="pi05")
    p.add_argument("--trainer", default="gpu", help="trainer preset: gpu, ddp, fsdp")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--batch", type=int, default=8, help="per device")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check-checkpoint", action="store_true")
    p.add_argument("--name", default=None)
    p.add_argument("overrides", nargs="*", help="extra config overrides")
    args = p.parse_args()
    work = Path(tempfile.gettempdir()) / f"bench_scaling_{args.name or args.trainer}"
    cfg = resolved_run_config(
        [
            f"policy={args.policy}",
            f"trainer={args.trainer}",
            f"trainer.devices={args.devices}",
            f"trainer.max_steps={args.warmup + args.steps}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "trainer.benchmark=false",
            "callbacks=none",
            "logger=none",
            "policy.tokenizer=tabletop",  # offline; the prompt's length is what matters
            "policy.dtype=float32",
            "policy.gradient_checkpointing=true",
            f"paths.root_dir={work}",
            *args.overrides,
        ],
        work / "run",
    )
    pl.seed_everything(0)
    policy = build(cfg)
    timer = StepTimer(args.warmup)
    trainer = build_trainer(cfg, extra_callbacks=[timer], wrap=policy.fsdp_blocks)
    n = args.batch * args.devices * (args.warmup + args.steps + 1)
    loader = DataLoader(SyntheticBatches(cfg.policy, n), batch_size=args.batch, num_workers=2)
    t0 = time.perf_counter()
    trainer.fit(policy, train_dataloaders=loader)
    fit_s = time.perf_counter() - t0
    peak = torch.tensor([peak_gb()], device=trainer.strategy.root_device)  # policy: on CPU now
    peaks = trainer.strategy.all_gather(peak).flatten().tolist()
    results = {
        "policy": args.policy,
        "trainer": args.trainer,
        "strategy": type(trainer.strategy).__name__,
        "devices": trainer.world_size,
        "batch_per_device": args.batch,
        "global_batch": args.batch * trainer.world_size,
        "params": sum(p.numel() for p in policy.parameters()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "fit_s": fit_s,
    }
    if timer.times:
        med = statistics.median(timer.times)
        results.update(
            step_s_median=med,
            step_s_all=timer.times,
            samples_per_s=args.batch * trainer.world_size / med,
            peak_mem_gb_per_device=peaks,
        )
    if args.check_checkpoint:
        results["checkpoint"] = check_checkpoint(cfg, trainer, policy, work, timer)
    if trainer.is_global_zero:
        name = args.name or f"scaling_{args.policy}_{args.trainer}{trainer.world_size}"
        table = [
            "| policy | strategy | GPUs | batch/GPU | step s (median) | samples/s | peak GB/GPU |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {args.policy} | {results['strategy']} | {trainer.world_size} | {args.batch} | "
            f"{results.get('step_s_median', float('nan')):.4f} | "
            f"{results.get('samples_per_s', float('nan')):.2f} | "
            f"{', '.join(f'{x:.1f}' for x in peaks)} |",
        ]
        write(name, results, table)
    return 0


def check_checkpoint(cfg, trainer: pl.Trainer, policy, work: Path, timer: StepTimer) -> dict:
    """Save through the strategy (FSDP gathers a full state dict on rank 0), load the
    LeRobot-layout ``pretrained_model`` on one device, then resume training from it."""
    path = work / "checkpoint"
    trainer.save_checkpoint(path)
    trainer.strategy.barrier()
    out: dict = {"path": str(path)}
    if trainer.is_global_zero:
        loaded = load_pretrained(path / "pretrained_model")  # strict: every name and shape
        loaded.to("cuda:0" if torch.cuda.is_available() else "cpu")
        out["loaded_params"] = sum(p.numel() for p in loaded.parameters())
        out["loaded_finite"] = all(torch.isfinite(p).all().item() for p in loaded.parameters())
    step = trainer.global_step
    resumed = build(cfg)
    more = build_trainer(
        cfg,
        extra_callbacks=[StepTimer(10**9)],
        overrides={"max_steps": step + 2},
        wrap=resumed.fsdp_blocks,
    )
    loader = DataLoader(SyntheticBatches(cfg.policy, 64), batch_size=2)
    more.fit(resumed, train_dataloaders=loader, ckpt_path=path)
    out.update(resumed_from_step=step, resumed_to_step=more.global_step)
    return out


if __name__ == "__main__":
    sys.exit(main())
