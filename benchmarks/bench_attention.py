"""Pi0's joint attention alone, forward + backward, at the training benchmark's shapes:
SDPA over the dense additive mask against vlaexp's unmasked blocks (a batch without padding,
``joint.attention_by_blocks``) and other ways to run the same mask, and how far each is from
float32 math.

    python benchmarks/bench_attention.py            # on a GPU
    python benchmarks/bench_attention.py --batch 2  # a smoke run (CPU: the op's loop, slow)

Layout: two cameras of 256 tokens, 48 text tokens, then Pi0's state token and 50 actions
(blocks end at 560, 561, 611); 8 query heads on one key head of 256 (Gemma-2B / 300M).
``text pads``: each sample keeps 12-40 of its 48 text tokens (the rest is padding), as
LIBERO prompts do; ``no pads``: every token valid, as bench_pi0.py feeds (unmasked blocks
apply only there). Other modes: ``flash_varlen_blocks.py`` (the mask with padding, exactly,
on FlashAttention-2's varlen kernel; not used by vlaexp); ``split`` (prefix rows unmasked or
with a key-padding bias, the suffix rows under their mask rows); ``no mask`` bounds (not the
same function: the mask dropped). TFLOP/s
count the dense 611 x 611 problem (forward 4 B H L^2 D, backward 2.5x), as the training
benchmark's FLOP count does. Writes ``results/attention_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flash_varlen_blocks as fvb
import torch
import torch.nn.functional as F
from report import write
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlaexp.policies.pi0 import gemma
from vlaexp.policies.pi0.gemma import MASK_VALUE
from vlaexp.policies.pi0.joint import attention_by_blocks

ENDS = [560, 561, 611]


def layout(batch: int, pads: bool, device: torch.device) -> torch.Tensor:
    pad = torch.ones(batch, ENDS[-1], dtype=torch.bool, device=device)
    if pads:
        g = torch.Generator().manual_seed(0)
        for i, n in enumerate(torch.randint(12, 41, (batch,), generator=g).tolist()):
            pad[i, 512 + n : 560] = False
    return pad


def dense(q, k, v, pad, ends, q_start):
    """Masked attention over expanded key heads (the mask's definition, written densely)."""
    h, d = q.shape[2:]
    rep = h // k.shape[2]
    kk = k.repeat_interleave(rep, dim=2).transpose(1, 2)
    vv = v.repeat_interleave(rep, dim=2).transpose(1, 2)
    s = q.transpose(1, 2) @ kk.transpose(-1, -2) * d**-0.5
    allowed = fvb.block_mask(pad, ends)[:, q_start:][:, None]
    s = s.masked_fill(~allowed, float("-inf"))
    return (s.softmax(-1) @ vv).transpose(1, 2)


def timed(fn, n: int, device: torch.device) -> list[float]:
    """Milliseconds per call, by CUDA events on a GPU."""
    out = []
    for _ in range(n):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            import time

            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return out


def modes(pad: torch.Tensor):
    """name -> attention(q [B, L, H, D], k, v [B, L, 1, D]) -> [B, L, H, D]."""
    mask = fvb.block_mask(pad, ENDS)[:, None]
    additive = torch.zeros(mask.shape, dtype=torch.bfloat16, device=pad.device)
    additive = additive.masked_fill(~mask, MASK_VALUE)
    lp = ENDS[0]
    prefix_full = bool(pad[:, :lp].all())
    key_pad = additive[:, :, :1, :lp] if not prefix_full else None  # [B, 1, 1, Lp]: keys only

    def sdpa(q, k, v, attn_mask=None, backends=None):
        h = q.shape[2]
        kk, vv = (x.transpose(1, 2).expand(-1, h, -1, -1) for x in (k, v))
        if backends is None:
            return F.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, attn_mask=attn_mask)
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, attn_mask=attn_mask)

    def split(q, k, v):
        """Prefix rows over prefix keys (no mask without padding, else a key-padding bias
        broadcast over the queries), the suffix rows over all keys under their mask rows."""
        mask_p = None if key_pad is None else key_pad.expand(-1, -1, lp, -1)
        prefix = sdpa(q[:, :lp], k[:, :lp], v[:, :lp], mask_p)
        suffix = sdpa(q[:, lp:], k, v, additive[:, :, lp:])
        return torch.cat([prefix, suffix], dim=2).transpose(1, 2)

    def unmasked(q, k, v):
        """vlaexp's path for a batch without padding: the pieces joined for the timing."""
        queries = [(0, ENDS[0], q[:, : ENDS[0]].transpose(1, 2))]  # the prefix stream
        queries.append((ENDS[0], ENDS[-1], q[:, ENDS[0] :].transpose(1, 2)))  # the suffix's
        kk, vv = k.transpose(1, 2), v.transpose(1, 2)
        pieces = attention_by_blocks(queries, kk, vv, tuple(ENDS), "sdpa")
        out = torch.cat([t for _, _, t in pieces], dim=1)
        return out.unflatten(-1, (q.shape[2], q.shape[3]))

    out = {
        "sdpa, dense mask": lambda q, k, v: sdpa(q, k, v, additive).transpose(1, 2),
        "flash varlen blocks (padding exact)": lambda q, k, v: fvb.block_attention(
            q, k, v, pad, ENDS
        ),
        "split: prefix unmasked / key-pad bias, suffix masked": split,
    }

    def unmasked_expanded(q, k, v):
        gemma.GQA_WITHOUT_MASK = False
        try:
            return unmasked(q, k, v)
        finally:
            gemma.GQA_WITHOUT_MASK = True

    if prefix_full:
        out["unmasked blocks (vlaexp, no padding only)"] = unmasked
        out["unmasked blocks, key heads expanded"] = unmasked_expanded
    if not pad.is_cuda:
        return out
    return out | {
        "cudnn, no mask (bound)": lambda q, k, v: sdpa(
            q, k, v, backends=[SDPBackend.CUDNN_ATTENTION]
        ).transpose(1, 2),
        "flash, no mask (bound)": lambda q, k, v: sdpa(
            q, k, v, backends=[SDPBackend.FLASH_ATTENTION]
        ).transpose(1, 2),
    }


def kernels(step, n: int = 3) -> list:
    """(name, ms per call) of the kernels of ``n`` calls, the largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    rows = [
        (e.key[:90], round(e.device_time_total / 1e3 / n, 3), e.count // n)
        for e in prof.key_averages()
        if e.device_time_total > 0
    ]
    return sorted(rows, key=lambda r: -r[1])[:12]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--name", default="attention_speed")
    parser.add_argument("--profile", action="store_true", help="kernel table per mode (GPU)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.batch > 4:
        print("bench_attention: skipped, batch 32 needs a CUDA device (--batch 2 for a smoke run)")
        return 0
    b, length, h, d = args.batch, ENDS[-1], 8, 256
    flop = 4 * b * h * length * length * d * 3.5  # forward + backward (2.5x)
    rows, table = [], []
    for pads in (False, True):
        pad = layout(b, pads, device)
        torch.manual_seed(0)
        q = torch.randn(b, length, h, d, device=device, dtype=torch.bfloat16)
        k = torch.randn(b, length, 1, d, device=device, dtype=torch.bfloat16)
        v = torch.randn(b, length, 1, d, device=device, dtype=torch.bfloat16)
        grad_out = torch.randn_like(q)
        valid = pad[:, :, None, None].to(q.dtype)
        ref = None
        for name, fn in modes(pad).items():
            qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))

            def step(fn=fn, qq=qq, kk=kk, vv=vv, g=grad_out * valid):
                out = fn(qq, kk, vv)
                out.backward(g)
                return out

            out = step()
            grads = [x.grad.float().clone() for x in (qq, kk, vv)]
            if ref is None:  # float32 math over the dense mask
                q32, k32, v32 = (x.float().requires_grad_() for x in (q, k, v))
                want = dense(q32, k32, v32, pad, ENDS, 0)
                want.backward(grad_out.float() * valid)
                ref = want.detach(), [x.grad for x in (q32, k32, v32)]
            keep = pad.bool()
            err = float((out.float() - ref[0])[keep].abs().max())
            gerr = max(
                float((g - r).abs().max() / r.abs().max())
                for g, r in zip(grads, ref[1], strict=True)
            )
            for _ in range(3):
                step()
            ms = timed(step, args.iters, device)
            med = statistics.median(ms)
            top = kernels(step) if args.profile and device.type == "cuda" else None
            row = {
                "layout": "text pads" if pads else "no pads",
                "mode": name,
                "ms_median": round(med, 3),
                "ms_min": round(min(ms), 3),
                "tflops": round(flop / med / 1e9, 1),
                "max_abs_err_out": err,
                "max_rel_err_grad": gerr,
            }
            if top:
                row["kernels (name, ms per call, launches per call)"] = top
            rows.append(row)
            print(row, flush=True)
    table = [
        f"Pi0 joint attention, batch {b}, 611 tokens, 8 heads / 1 key head of {d}, bf16, "
        f"forward + backward, median of {args.iters}",
        "",
        "| layout | mode | ms median | ms min | TFLOP/s (dense count) | max err out | max rel err grads |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['layout']} | {r['mode']} | {r['ms_median']} | {r['ms_min']} | {r['tflops']} | "
        f"{r['max_abs_err_out']:.2e} | {r['max_rel_err_grad']:.2e} |"
        for r in rows
    ]
    path = write(args.name, {"rows": rows}, table)
    print("\n".join(table))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
