"""Pi0 / Pi0.5 speed: training step and one action chunk, at the peer's settings.

    python benchmarks/bench_pi0.py --variant pi0          # full size, on a GPU
    python benchmarks/bench_pi0.py --variant pi0 --tiny   # the tiny widths (smoke run, any device)

Settings as ``shared/peer/lerobot_pi0_bench.py`` measures LeRobot's Pi0: random weights,
bfloat16 weights with float32 norms under bf16 autocast, batch 32, two 224x224 cameras, 48
text tokens, chunk 50, fused AdamW. Training is timed eager and with ``torch.compile``
(optionally with gradient checkpointing; ``compiled_budget`` with torch's activation memory
budget, which recomputes the cheapest activations; ``compiled_cuda_graphs`` replays forward
and backward as CUDA graphs; ``compiled_nocudnn`` keeps training's SDPA off cuDNN;
``compiled_dense_mask`` runs training's attention as SDPA over the dense mask instead of
block by block without a mask (``joint.UNMASKED_BLOCKS``, the default for a batch without
padding, such as this one), as ``count``, ``compiled_nocudnn`` and ``compiled_inline_rope``
do; ``compiled_inline_rope`` lets inductor trace through the RoPE tables; ``autotuned``
searches GEMM kernels); FLOPs are counted once, eager (``--count-batch`` scales a smaller batch's count), with
``FlopCounterMode``, on the published shapes (before ``--pad-vision-mlp`` pads SigLIP's MLP
width with zero weights, work that is not counted); MFU is counted FLOPs / time / 989
TFLOP/s (H100/H200 dense bf16).
One chunk (batch 1, prefix + ``num_inference_steps`` Euler steps over the KV cache) is
timed eager, replayed as one captured CUDA graph (``CudaGraphSampler``, what the policy uses
on a GPU), and with the prefix pass and denoising step compiled before the capture
(``compiled_cuda_graphs``, ``policy.compile=true``; ``autotuned_cuda_graphs`` compiles with
GEMM autotuning); ``compiled`` is the compiled functions without the graph. ``--profile``
adds, for compiled modes, the GPU kernel time of a chunk and of its prefix pass, or of a
training step by kind of kernel (GEMM, attention, Triton, optimizer), and the kernels that take
most of it. Medians; writes ``results/pi0_speed_<variant>.{json,md}``.
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
from torch.nn.attention import SDPBackend
from torch.utils.flop_counter import FlopCounterMode

from vlaexp.config.policy import GemmaStackConfig, Pi0Config, Pi05Config, VisionTowerConfig
from vlaexp.policies.pi0 import gemma, joint
from vlaexp.policies.pi0.model import CudaGraphSampler, compile_sampling, uncompile_sampling
from vlaexp.policies.pi0.policy import Pi0Policy
from vlaexp.policies.pi0.vision import pad_mlp_width

PEAK_TFLOPS = 989.0


def build(args: argparse.Namespace, device: torch.device) -> Pi0Policy:
    cfg = (Pi05Config if args.variant == "pi05" else Pi0Config)(
        tokenizer="tabletop",  # the benchmark feeds token ids; the tokenizer is not used
        tokenizer_max_length=args.text,
        chunk_size=args.chunk,
        n_action_steps=args.chunk,
        dtype=args.dtype,
        gradient_checkpointing=args.grad_ckpt,
    )
    if args.tiny:
        cfg.image_size = 64
        cfg.vision = VisionTowerConfig(96, 3, 192, 3, 8)
        cfg.vlm = GemmaStackConfig(128, 3, 256, 2, 1, 32)
        cfg.expert = GemmaStackConfig(64, 3, 128, 2, 1, 32)
        cfg.vocab_size = 1024
    torch.manual_seed(0)
    with torch.device(device):  # initialize on the device: minutes faster at full size
        return Pi0Policy(cfg)


def inputs(policy: Pi0Policy, batch: int, device: torch.device):
    cfg = policy.config
    g = torch.Generator(device="cpu").manual_seed(0)
    images = [
        (torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(device)
        for _ in range(2)
    ]
    masks = [torch.ones(batch, dtype=torch.bool, device=device) for _ in range(2)]
    tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.tokenizer_max_length), generator=g).to(
        device
    )
    token_mask = torch.ones_like(tokens, dtype=torch.bool)
    state = None if policy.pi05 else torch.randn(batch, cfg.max_state_dim, generator=g).to(device)
    actions = torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=g).to(device)
    return images, masks, tokens, token_mask, state, actions


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def train_figures(policy: Pi0Policy, args, device, mode: str) -> dict:
    model = policy.model.train()
    compiled = mode.startswith("compiled") or mode == "autotuned"
    graphs = mode == "compiled_cuda_graphs"  # forward and backward replayed as CUDA graphs
    torch._dynamo.reset()
    import torch._functorch.config as functorch_config

    functorch_config.activation_memory_budget = (
        args.activation_budget if mode == "compiled_budget" and args.activation_budget else 1.0
    )
    # "autotuned": inductor searches GEMM kernels (Triton templates beside cuBLAS) per shape
    forward = torch.compile(model, mode=COMPILE_MODES.get(mode)) if compiled else model
    # "compiled_nocudnn": training's SDPA without cuDNN's fused attention (flash, memory-
    # efficient, math), as sampling already runs (gemma.INFERENCE_SDPA_BACKENDS)
    # "compiled_inline_rope": RoPE tables as aten ops that inductor traces through (before run
    # G the default; now an opaque op computes them once per forward)
    joint.rotary_tables = (
        gemma.rotary_tables_inline if mode == "compiled_inline_rope" else gemma.rotary_tables
    )
    gemma.TRAINING_SDPA_BACKENDS = (
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        if mode == "compiled_nocudnn"
        else None
    )
    # "compiled_dense_mask" (and the modes above): SDPA over the dense additive mask, as before
    # run H, also for this unpadded batch. FLOPs are counted on that path too: the dense
    # L x L attention, the work the peer's count includes (the unmasked blocks skip the
    # prefix-to-suffix entries the mask zeroes, ~8% of the attention FLOPs).
    joint.UNMASKED_BLOCKS = mode not in (
        "count",
        "compiled_dense_mask",
        "compiled_nocudnn",
        "compiled_inline_rope",
    )
    batch = args.count_batch or args.batch if mode == "count" else args.batch
    images, masks, tokens, token_mask, state, actions = inputs(policy, batch, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    # known on the host, as the policy knows it from its tokenizer (no sync in the step)
    unpadded = model.is_unpadded(token_mask, masks)

    def step():
        if graphs:  # a new iteration: the last one's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with policy.autocast():
            out = forward(images, masks, tokens, token_mask, state, actions, unpadded=unpadded)
            loss = out.mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if mode == "count":  # one eager step under the FLOP counter
        with FlopCounterMode(display=False) as counter:
            step()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # every op of the step is per sample, so the count scales with the batch exactly
        return {"tflop_per_step": counter.get_total_flops() / 1e12 * args.batch / batch}
    for _ in range(max(args.warmup, 3) if graphs else args.warmup):  # warm up, record, replay
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed(step, args.steps, device)
    med = statistics.median(times)
    out = {"step_s_median": med, "step_s_all": times, "samples_per_s": args.batch / med}
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    if args.profile and device.type == "cuda" and compiled:
        try:  # where a step's time goes: kernel time against the step's wall time
            ms, n, top = profile_kernels(step, 10**6)
            out["profile"] = {
                "step_kernel_ms": ms,
                "step_kernels": n,
                "gpu_idle_share": max(0.0, 1 - ms / (1000 * med)),
                "by_kind_ms": kernel_kinds(top),
                "top_kernels (name, count, ms)": top[:25],
            }
        except Exception as e:  # the timing above stands without it
            out["profile"] = {"error": f"{type(e).__name__}: {e}"}
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def eager_sample(model, feed) -> torch.Tensor:
    """The chunk from the uncompiled functions (compiled ones are instance attributes)."""
    compiled = {
        k: model.__dict__.pop(k) for k in ("encode_prefix", "denoise_step") if k in model.__dict__
    }
    try:
        return model.sample_actions(*feed)
    finally:
        model.__dict__.update(compiled)


COMPILE_MODES = {
    "compiled": None,
    "autotuned": "max-autotune-no-cudagraphs",
    "compiled_cuda_graphs": "reduce-overhead",  # training only: cudagraph trees
}


def chunk_latency(policy: Pi0Policy, args, device, mode: str) -> dict:
    model = policy.model.eval()
    images, masks, tokens, token_mask, state, _ = inputs(policy, 1, device)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, device=device)
    feed = (images, masks, tokens, token_mask, state, noise)
    uncompile_sampling(model)
    kind = mode.split("_")[0]
    if kind in COMPILE_MODES:
        torch._dynamo.reset()
        compile_sampling(model, COMPILE_MODES[kind])
    if mode.endswith("cuda_graphs"):
        sampler = CudaGraphSampler(model, feed, policy.autocast)

        def run():
            return sampler(*feed)

    else:

        def run():
            with policy.autocast():
                return model.sample_actions(*feed).clone()

    first = run()
    for _ in range(args.warmup):
        run()
    times = timed(run, args.chunks, device)
    with policy.autocast():
        reference = eager_sample(model, feed)
    out = {
        "ms_median": 1000 * statistics.median(times),
        "ms_min": 1000 * min(times),
        "max_abs_diff_vs_eager": float((first - reference).abs().max()),
    }
    if args.profile and device.type == "cuda" and kind in COMPILE_MODES:  # graph-free
        try:
            out["profile"] = kernel_profile(policy, model, feed)
        except Exception as e:  # the timing above stands without it
            out["profile"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def profile_kernels(fn, n_top: int = 400) -> tuple[float, int, list]:
    """GPU kernel time (ms) of one call of ``fn`` (torch.profiler, after one untimed call),
    the number of kernels, and the ``n_top`` kernels taking the most time: (name, count, ms)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    gpu = [e for e in rows if getattr(e.device_type, "name", "") == "CUDA"] or rows
    total = sum(e.self_device_time_total for e in gpu) / 1000
    top = sorted(gpu, key=lambda e: -e.self_device_time_total)[:n_top]
    return (
        total,
        sum(e.count for e in gpu),
        [(e.key[:120], e.count, round(e.self_device_time_total / 1000, 3)) for e in top],
    )


# kernel name fragments -> kind, first match wins (cuBLAS / CUTLASS GEMMs, attention, Triton
# fusions from inductor, the fused optimizer, copies)
KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "sdpa", "attention", "attn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas", "matmul", "mm_")),
    ("optimizer", ("adam", "multi_tensor")),
    ("triton", ("triton",)),
    ("copy", ("copy", "memcpy", "memset", "cat", "fill")),
)


def kernel_kinds(top: list) -> dict:
    """Kernel time (ms) per kind of the (name, count, ms) rows."""
    out: dict[str, float] = {}
    for name, _, ms in top:
        low = name.lower()
        kind = next((k for k, keys in KERNEL_KINDS if any(x in low for x in keys)), "other")
        out[kind] = round(out.get(kind, 0.0) + ms, 3)
    return out


def kernel_profile(policy: Pi0Policy, model, feed) -> dict:
    """GPU kernel time of one chunk and of its prefix pass alone, and the kernels that take
    the most of it: where a chunk's time goes."""

    def kernels(fn) -> tuple[float, int, list]:
        def call():
            with policy.autocast():
                fn()

        ms, n, top = profile_kernels(call, 25)
        return ms, n, top

    chunk_ms, chunk_n, top = kernels(lambda: model.sample_actions(*feed))
    prefix_ms, prefix_n, _ = kernels(lambda: model.encode_prefix(*feed[:4]))
    return {
        "chunk_kernel_ms": chunk_ms,
        "chunk_kernels": chunk_n,
        "prefix_kernel_ms": prefix_ms,
        "prefix_kernels": prefix_n,
        "top_kernels (name, count, ms)": top,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=["pi0", "pi05"], default="pi0")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--text", type=int, default=48)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=20, help="timed chunk predictions")
    parser.add_argument(
        "--train-modes",
        nargs="*",
        default=["eager", "compiled"],
        choices=[
            "eager",
            "compiled",
            "compiled_budget",
            "compiled_nocudnn",
            "compiled_dense_mask",
            "compiled_cuda_graphs",
            "compiled_inline_rope",
            "autotuned",
        ],
    )
    parser.add_argument(
        "--infer-modes",
        nargs="*",
        default=["eager", "cuda_graphs", "compiled_cuda_graphs"],
        choices=[
            f"{kind}{graph}"
            for kind in ("eager", "compiled", "autotuned")
            for graph in ("", "_cuda_graphs")
            if f"{kind}{graph}" != "eager_cuda_graphs"
        ]
        + ["cuda_graphs"],
    )
    parser.add_argument(
        "--count-batch",
        type=int,
        default=None,
        help="count FLOPs on this batch, scaled to --batch (the eager counted step at batch 32 "
        "needs ~101 GB: on an 80 GB card count at 8)",
    )
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument(
        "--sdpa-default-inference",
        action="store_true",
        help="sample with PyTorch's default SDPA kernel choice (cuDNN included), for an A/B",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="kernel profile of a compiled training step, and of the compiled sampling "
        "functions (outside the graph) in compiled inference modes",
    )
    parser.add_argument(
        "--activation-budget",
        type=float,
        default=None,
        help="torch._functorch activation_memory_budget for the compiled_budget training mode",
    )
    parser.add_argument(
        "--pad-vision-mlp",
        type=int,
        default=0,
        help="pad SigLIP's MLP width to a multiple of this with zero weights (4304 -> 4352 at 128)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths, for a smoke run")
    parser.add_argument(
        "--name", default=None, help="results file name (default pi0_speed_<variant>)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        print("bench_pi0: skipped, full-size Pi0 needs a CUDA device (add --tiny for a smoke run)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.sdpa_default_inference:
        gemma.INFERENCE_SDPA_BACKENDS = None
    policy = build(args, device)
    n_params = sum(p.numel() for p in policy.model.parameters())
    train: dict = {}
    infer: dict = {}
    flops = (
        train_figures(policy, args, device, "count")["tflop_per_step"] if args.train_modes else None
    )
    if args.pad_vision_mlp:
        width = pad_mlp_width(policy.model.vision_tower, args.pad_vision_mlp)
        print(f"SigLIP MLP width {policy.config.vision.mlp_dim} padded to {width}", flush=True)
    for mode in args.train_modes:
        try:
            train[mode] = train_figures(policy, args, device, mode)
        except Exception as e:  # recorded, so one failing mode does not lose the others
            train[mode] = {"error": f"{type(e).__name__}: {e}"}
        print(mode, {k: v for k, v in train[mode].items() if k != "step_s_all"}, flush=True)
        report(args, policy, device, n_params, flops, train, infer)
    for mode in args.infer_modes:
        try:
            infer[mode] = chunk_latency(policy, args, device, mode)
        except Exception as e:
            infer[mode] = {"error": f"{type(e).__name__}: {e}"}
        print(mode, infer[mode], flush=True)
        report(args, policy, device, n_params, flops, train, infer)
    return 0


def _rows(results: dict, n_cols: int, cells) -> list[str]:
    """Markdown rows, one per mode: its cells, or the error a failed mode recorded."""
    rows = []
    for mode, r in results.items():
        values = [f"failed: {r['error'][:200]}"] + [""] * (n_cols - 1) if "error" in r else cells(r)
        rows.append(f"| {mode} | " + " | ".join(values) + " |")
    return rows


def report(
    args, policy: Pi0Policy, device, n_params: int, flops: float | None, train: dict, infer: dict
) -> None:
    """Write the results so far (JSON + Markdown); ``flops``: TFLOP per training step."""
    for r in train.values():
        r["tflop_per_step"] = flops
        if flops and "step_s_median" in r:
            r["tflop_s"] = flops / r["step_s_median"]
            r["mfu"] = r["tflop_s"] / PEAK_TFLOPS
    settings = dict(vars(args))
    table = [
        f"{args.variant}{' (tiny widths)' if args.tiny else ''}: {n_params / 1e9:.2f} B parameters, "
        + (
            "bfloat16 weights (float32 norms) under bf16 autocast"
            if args.dtype == "bfloat16"
            else "float32"
        )
        + f", batch {args.batch}, two "
        f"{policy.config.image_size}px cameras, {args.text} text tokens, chunk {args.chunk}, fused AdamW"
        f"{', gradient checkpointing' if args.grad_ckpt else ''}"
        f"{f', SigLIP MLP padded to a multiple of {args.pad_vision_mlp}' if args.pad_vision_mlp else ''}"
        f"; device {device}.",
        "",
        "| training | step s (median) | samples/s | TFLOP/step | TFLOP/s | MFU (of 989) | peak GB |",
        "|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    table += _rows(
        train,
        6,
        lambda r: [
            f"{r['step_s_median']:.3f}",
            f"{r['samples_per_s']:.1f}",
            f"{flops or nan:.0f}",
            f"{r.get('tflop_s', nan):.0f}",
            f"{100 * r.get('mfu', nan):.0f}%",
            f"{r.get('peak_mem_gb', nan):.1f}",
        ],
    )
    table += [
        "",
        f"| one chunk (batch 1, {policy.config.num_inference_steps} steps) | ms median | ms min | max abs diff vs eager |",
        "|---|---|---|---|",
    ]
    table += _rows(
        infer,
        3,
        lambda r: [
            f"{r['ms_median']:.1f}",
            f"{r['ms_min']:.1f}",
            f"{r['max_abs_diff_vs_eager']:.2e}",
        ],
    )
    write(
        args.name or f"pi0_speed_{args.variant}{'_tiny' if args.tiny else ''}",
        {"settings": settings, "params": n_params, "train": train, "infer": infer},
        table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
