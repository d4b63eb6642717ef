"""RND scoring time for one step: every token of every camera through its RND, as at runtime,
in each precision of ``rnd.score.precision``, and how closely the reduced ones follow float32.

    python benchmarks/bench_rnd.py                       # full size: 2 cameras x 256 tokens x 2048-D
    python benchmarks/bench_rnd.py --precisions int8     # one precision (--dtype X: the same)
    python benchmarks/bench_rnd.py --fidelity-steps 0    # times only

Times :func:`vlaexp.uncertainty.monitor.score_tokens` (one batched pass per camera, camera
means, overall, 16x16 maps) on random float32 tokens of Pi0.5's width, after warm-up; on a
CPU int8 also as it ran before its two speed-ups (cameras in turn, then also FBGEMM's
kernels instead of oneDNN's), so each one's share shows side by side; every precision also
with a random stand-in for the policy's projector folded into the RNDs (``--features``, the
stage's default ``rnd.score.fold_projector``), on the features; the variants take
turns within each repeat (the same tokens and machine load; each model's
weights leave the caches between its passes, as the policy's passes would evict them). The vision tower is not included (the policy computes
those tokens to act anyway). Issue 6's targets: <= 50 ms on a 2-core CPU, <= 2 ms on an H200.

Fidelity: one full-size RND's predictor is trained briefly (Adam, batch 256) on synthetic
structured tokens (a random rank-``--rank`` subspace plus noise); held-out tokens of that
subspace (in) and of subspaces rotated away from it (shifted) are scored in every precision,
256 tokens per pass as at runtime. Reported: Spearman of each precision's per-token scores
against float32's within each set and within mixed passes (half in, half shifted 45 degrees:
a pass shares its activation ranges under int8), and the in-vs-shifted AUROC; int8 also as
torch's own int8 Linear runs it (7-bit activations), which :class:`Int8Linear` replaces.
Writes ``results/rnd_score_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from report import write
from scipy.stats import mannwhitneyu, spearmanr
from torch import nn

from vlaexp.uncertainty.monitor import score_tokens
from vlaexp.uncertainty.rnd import (
    PRECISIONS,
    RND,
    Int8Linear,
    fold_projection,
    for_inference,
    int8_engine,
)

SHIFTS = (20, 45, 90)  # degrees between the training subspace and a shifted set's
SHORT = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}
SEVEN_BIT = "int8, 7-bit activations (torch's default)"
INT8_IN_TURN = "int8, cameras in turn"
INT8_X86 = "int8, x86 engine (FBGEMM), cameras in turn"
FOLDED = "projector folded"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_precisions(args, device: torch.device, precisions: list[str]) -> tuple[dict, int, int]:
    """ms per step of each variant (scores only / with maps), the variants interleaved; and
    the parameters of one RND, and of one with the projector folded in (0: none)."""
    cams = [f"camera{i}" for i in range(args.cameras)]
    torch.manual_seed(0)
    base = {c: RND(args.dim).to(device).eval() for c in cams}
    n_params = sum(p.numel() for p in base[cams[0]].parameters())
    proj = projector(args, device)
    # label -> (models per camera, cameras side by side, reads features); each precision as
    # the stage would run it on the projector's tokens, then with the projector folded in
    models = {p: ({c: for_inference(base[c], p) for c in cams}, True, False) for p in precisions}
    if "int8" in precisions and args.cameras > 1:  # what the two int8 changes bring, apart
        models[INT8_IN_TURN] = (models["int8"][0], False, False)
        models[INT8_X86] = (
            {c: for_inference(base[c], "int8", engine="x86") for c in cams},
            False,
            False,
        )
    n_folded = 0
    if proj is not None:
        n_folded = sum(p.numel() for p in fold_projection(base[cams[0]], proj).parameters())
        for p in precisions:
            folded = {c: for_inference(fold_projection(base[c], proj), p) for c in cams}
            models[f"{p}, {FOLDED}"] = (folded, True, True)
    del base
    features = {
        c: torch.randn(1, args.tokens, args.features or args.dim, device=device) for c in cams
    }
    with torch.no_grad():
        tokens = features if proj is None else {c: proj(f) for c, f in features.items()}
    variants = [(p, maps) for p in models for maps in (False, True)]
    times: dict = {v: [] for v in variants}

    def run(p: str, maps: bool) -> None:
        m, parallel, reads_features = models[p]
        score_tokens(m, features if reads_features else tokens, maps=maps, parallel=parallel)

    for p, maps in variants:
        for _ in range(3):
            run(p, maps)
    for _ in range(args.repeats):
        for p, maps in variants:
            sync(device)
            t0 = time.perf_counter()
            run(p, maps)
            sync(device)
            times[p, maps].append(1000 * (time.perf_counter() - t0))
    rows = {
        p: {
            ("with maps" if maps else "scores only"): {
                "ms_median": statistics.median(times[p, maps]),
                "ms_min": min(times[p, maps]),
                "ms_all": [round(t, 2) for t in times[p, maps]],
            }
            for maps in (False, True)
        }
        for p in models
    }
    return rows, n_params, n_folded


def projector(args, device: torch.device) -> nn.Linear | None:
    """A random stand-in for the policy's vision projector (``--features`` -> ``--dim``), whose
    folding into the RNDs the stage does by default (``rnd.score.fold_projector``); None
    without ``--features``."""
    if not args.features:
        return None
    torch.manual_seed(2)
    return nn.Linear(args.features, args.dim).to(device).eval().requires_grad_(False)


def auroc(inside: np.ndarray, shifted: np.ndarray) -> float:
    """P(a shifted token scores above an in-distribution one)."""
    return float(mannwhitneyu(shifted, inside).statistic) / (len(inside) * len(shifted))


def fidelity(args, device: torch.device, precisions: list[str]) -> dict:
    """Train one RND briefly on structured tokens, then score held-out sets in each precision."""
    gen = torch.Generator().manual_seed(1)
    proj = projector(args, device)
    width = args.features or args.dim  # the subspace lies in the features when folding
    basis, other = torch.randn(2, args.rank, width, generator=gen) / math.sqrt(args.rank)

    def features(n: int, degrees: float = 0.0) -> torch.Tensor:
        a = math.radians(degrees)  # rotates the subspace, keeps the tokens' scale
        b = math.cos(a) * basis + math.sin(a) * other
        z = torch.randn(n, args.rank, generator=gen)
        return (z @ b + 0.1 * torch.randn(n, width, generator=gen)).to(device)

    def to_tokens(f: torch.Tensor) -> torch.Tensor:
        if proj is None:
            return f
        with torch.no_grad():
            return proj(f)

    def tokens(n: int, degrees: float = 0.0) -> torch.Tensor:
        return to_tokens(features(n, degrees))

    torch.manual_seed(0)
    rnd = RND(args.dim).to(device)
    opt = torch.optim.Adam(rnd.predictor.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    losses = []
    for _ in range(args.fidelity_steps):
        loss = rnd(tokens(256)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train_s = time.perf_counter() - t0
    rnd.eval()
    n = args.fidelity_tokens
    feats = {"in": features(n), **{f"shifted {d}°": features(n, d) for d in SHIFTS}}
    half = [t for i in range(0, n, 128) for t in (feats["in"][i : i + 128], features(128, 45))]
    feats["mixed"] = torch.cat(half)  # each pass of 256: 128 in, 128 shifted 45°
    sets = {k: to_tokens(f) for k, f in feats.items()}
    models = {p: for_inference(rnd, p) for p in dict.fromkeys(["float32", *precisions])}
    if "int8" in precisions:  # what torch's own int8 Linear does: 7-bit activations
        models[SEVEN_BIT] = for_inference(rnd, "int8")
        for m in models[SEVEN_BIT].modules():
            if isinstance(m, Int8Linear):
                m.reduce_range = True
    reads_features = set()
    if proj is not None:
        for p in dict.fromkeys(["float32", *precisions]):
            models[f"{p}, {FOLDED}"] = for_inference(fold_projection(rnd.eval(), proj), p)
            reads_features.add(f"{p}, {FOLDED}")
    with torch.no_grad():
        scores = {
            p: {
                k: torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)]).cpu().numpy()
                for k, x in (feats if p in reads_features else sets).items()
            }
            for p, model in models.items()
        }
    out = {
        "train": {
            "steps": args.fidelity_steps,
            "lr": args.lr,
            "seconds": train_s,
            "loss_first": losses[0],
            "loss_last": statistics.mean(losses[-10:]),
        },
        "tokens_per_set": n,
        "precisions": {},
    }
    ref = scores["float32"]
    for p, s in scores.items():
        both, both_ref = np.concatenate(list(s.values())), np.concatenate(list(ref.values()))
        out["precisions"][p] = {
            "spearman_vs_fp32": {k: float(spearmanr(s[k], ref[k]).statistic) for k in s},
            "auroc": {k: auroc(s["in"], s[k]) for k in s if k.startswith("shifted")},
            "mean_score": {k: float(s[k].mean()) for k in s},
            "median_rel_dev_vs_fp32": float(np.median(np.abs(both / both_ref - 1))),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=2048, help="token width (Pi0.5: 2048)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per camera image")
    parser.add_argument(
        "--features",
        type=int,
        default=1152,
        help="vision features the projector widens to --dim (Pi0.5: SigLIP's 1152): adds the "
        "rows with it folded into the RNDs, the stage's default; 0: none",
    )
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=None,
        help="default: all that run on the device (int8: CPU only)",
    )
    parser.add_argument(
        "--dtype", choices=PRECISIONS, default=None, help="one precision (= --precisions X)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--fidelity-steps", type=int, default=200, help="Adam steps; 0: none")
    parser.add_argument("--fidelity-tokens", type=int, default=1024, help="tokens per set")
    parser.add_argument("--rank", type=int, default=64, help="rank of the training tokens")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.dtype:
        args.precisions = [args.dtype]
    if not args.precisions:
        args.precisions = [p for p in PRECISIONS if device.type == "cpu" or p != "int8"]
    rows, n_params, n_folded = time_precisions(args, device, args.precisions)
    fid = fidelity(args, device, args.precisions) if args.fidelity_steps > 0 else None
    gflop = 2 * n_params * args.tokens * args.cameras / 1e9  # a multiply-add per weight per token
    target = 2.0 if device.type == "cuda" else 50.0
    folded_gflop = 2 * n_folded * args.tokens * args.cameras / 1e9
    table = [
        f"{args.cameras} cameras x {args.tokens} tokens x {args.dim}-D on {device.type} "
        f"({torch.get_num_threads()} CPU threads; int8 packed for the {int8_engine()} engine "
        "unless the row says otherwise, the cameras side by side on a CPU unless it says 'in "
        f"turn'); {n_params / 1e6:.1f} M parameters per RND, "
        f"{gflop:.1f} GFLOP per step; target <= {target:g} ms (read on the median with "
        f"maps, the stage's default). Median and min of {args.repeats} repeats, the variants "
        "taking turns; every repeat's time is in the JSON (`ms_all`)."
        + (
            f" Rows '{FOLDED}': the RNDs read {args.features}-D features, a random stand-in "
            f"for the policy's {args.features} -> {args.dim} projector folded into their first "
            f"layers (the stage's default, `rnd.score.fold_projector`; {folded_gflop:.1f} "
            "GFLOP); the other rows read the projected tokens."
            if args.features
            else ""
        ),
        "",
        "| precision | scores only, ms median | ms min | with maps, ms median | ms min | "
        "GFLOP/s (median, scores only) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, r in rows.items():
        so, wm = r["scores only"], r["with maps"]
        table.append(
            f"| {p} | {so['ms_median']:.1f} | {so['ms_min']:.1f} | {wm['ms_median']:.1f} | "
            f"{wm['ms_min']:.1f} | "
            f"{(folded_gflop if FOLDED in p else gflop) / so['ms_median'] * 1000:.0f} | "
            f"{'met' if wm['ms_median'] <= target else 'missed'} |"
        )
    if fid:
        tr = fid["train"]
        sets = list(next(iter(fid["precisions"].values()))["spearman_vs_fp32"])
        shifted = [k for k in sets if k.startswith("shifted")]
        table += [
            "",
            f"Fidelity: one RND's predictor trained {tr['steps']} Adam steps (lr {tr['lr']:g}, "
            f"batch 256, {tr['seconds']:.0f} s; loss {tr['loss_first']:.3f} -> "
            f"{tr['loss_last']:.3f}) on rank-{args.rank} structured tokens"
            + (" (features through the projector)" if args.features else "")
            + "; "
            f"{fid['tokens_per_set']} held-out tokens per set, scored 256 per pass. Spearman of "
            "per-token scores vs float32 within each set ('mixed': passes of 128 in + 128 "
            "shifted 45°), AUROC in vs shifted, median |score / float32's - 1|.",
            "",
            "| precision | "
            + " | ".join(f"Spearman {k}" for k in sets)
            + " | "
            + " | ".join(f"AUROC {k}" for k in shifted)
            + " | median rel. dev. |",
            "|---|" + "---|" * (len(sets) + len(shifted) + 1),
        ]
        for p, f in fid["precisions"].items():
            table.append(
                f"| {p} | "
                + " | ".join(f"{f['spearman_vs_fp32'][k]:.4f}" for k in sets)
                + " | "
                + " | ".join(f"{f['auroc'][k]:.4f}" for k in shifted)
                + f" | {f['median_rel_dev_vs_fp32']:.4f} |"
            )
    one = len(args.precisions) == 1 and args.precisions[0] != "float32"
    write(
        f"rnd_score_{device.type}" + (f"_{SHORT[args.precisions[0]]}" if one else ""),
        {
            "settings": vars(args),
            "device": device.type,
            "int8_engine": int8_engine(),
            "gflop_per_step": gflop,
            "target_ms": target,
            "results": rows,
            "fidelity": fid,
        },
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
