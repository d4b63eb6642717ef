"""RND scoring time for one step: every token of every camera through its RND, as at runtime.

    python benchmarks/bench_rnd.py                       # full size: 2 cameras x 256 tokens x 2048-D
    python benchmarks/bench_rnd.py --dtype bfloat16      # reduced precision (GPU)

Times :func:`vlaexp.uncertainty.monitor.score_tokens` (one batched pass per camera, camera
means, overall, 16x16 maps) on random tokens of Pi0.5's width, after warm-up; the vision
tower is not included (the policy computes those tokens to act anyway). Issue 6's targets:
<= 50 ms on a 2-core CPU, <= 2 ms on an H200. Writes ``results/rnd_score_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from report import write

from vlaexp.uncertainty.monitor import score_tokens
from vlaexp.uncertainty.rnd import RND


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=2048, help="token width (Pi0.5: 2048)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per camera image")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    cams = [f"camera{i}" for i in range(args.cameras)]
    models = {c: RND(args.dim).to(device, dtype).eval() for c in cams}
    tokens = {c: torch.randn(1, args.tokens, args.dim, device=device, dtype=dtype) for c in cams}
    rows = {}
    for maps in (False, True):
        for _ in range(3):
            score_tokens(models, tokens, maps=maps)
        times = []
        for _ in range(args.repeats):
            sync(device)
            t0 = time.perf_counter()
            score_tokens(models, tokens, maps=maps)
            sync(device)
            times.append(1000 * (time.perf_counter() - t0))
        rows["with maps" if maps else "scores only"] = {
            "ms_median": statistics.median(times),
            "ms_min": min(times),
        }
    n_params = sum(p.numel() for p in next(iter(models.values())).parameters())
    gflop = 2 * n_params * args.tokens * args.cameras / 1e9  # a multiply-add per weight per token
    target = 2.0 if device.type == "cuda" else 50.0
    table = [
        f"{args.cameras} cameras x {args.tokens} tokens x {args.dim}-D, {args.dtype} on "
        f"{device.type} ({torch.get_num_threads()} CPU threads); {n_params / 1e6:.1f} M parameters "
        f"per RND, {gflop:.1f} GFLOP per step; target <= {target:g} ms",
        "",
        "| one step | ms median | ms min |",
        "|---|---|---|",
        *(f"| {k} | {v['ms_median']:.2f} | {v['ms_min']:.2f} |" for k, v in rows.items()),
    ]
    write(
        f"rnd_score_{device.type}{'_bf16' if args.dtype == 'bfloat16' else ''}",
        {
            "settings": vars(args),
            "device": device.type,
            "gflop_per_step": gflop,
            "target_ms": target,
            "results": rows,
        },
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
