"""What adaptive RVQ decoding can save: the backbone's prefill time P against the time t of
each code layer, and whole chunks dense / coarse / flow-matching, at batch 1.

    python benchmarks/bench_rvq_decoding.py --size full     # Pi0.5's full widths, on a GPU
    python benchmarks/bench_rvq_decoding.py --size small    # pi05_small's widths (CPU or GPU)

The RVQ policy (``policy=rvq_policy``) and the flow-matching Pi0.5 are built at the same
widths with random weights (timing does not depend on them), bfloat16 weights under autocast
on a GPU (float32 on a CPU), two cameras, ``--text`` prompt tokens. Timed eager unless
said, medians of ``--repeats``:

- ``prefill``: SigLIP + projector + the VLM over the prefix, building the KV cache (P);
- ``layer_<l>``: the expert's pass over code blocks 1..l on the cache and layer l's logits
  (t_l; the RVQ policy runs one per layer it decodes);
- ``decode_<k>``: the tokenizer's decoder from k layers;
- whole chunks through ``predict_action_chunk`` (prompt tokenization included): RVQ dense
  (all layers), coarse (``--draft`` layers), and the flow-matching Pi0.5 eager and, on a GPU,
  replayed as CUDA graphs (what both policies do when acting, ``policy.cuda_graphs``), with
  the RVQ policy's prefix and draft phases timed apart (``cuda_graph_ms``).

The best saving adaptive decoding allows is coarse's, refining nothing:
1 - (P + t_1..draft + decode) / (P + t_1..L + decode).
Writes ``results/rvq_decoding_<size>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from bench_pi0 import timed
from report import write

from vlaexp.config.policy import GemmaStackConfig, Pi05Config, RVQPolicyConfig, VisionTowerConfig
from vlaexp.config.tokenizer import RVQSettings
from vlaexp.policies.pi0.policy import Pi05Policy
from vlaexp.policies.rvq import RVQPolicy
from vlaexp.tokenizers.rvq import RVQTokenizer

SIZES = {
    # (image size, vision, vlm, expert); full = the published Pi0.5
    "full": (224, VisionTowerConfig(), GemmaStackConfig(), GemmaStackConfig(1024, 18, 4096)),
    "small": (
        128,
        VisionTowerConfig(256, 6, 1024, 4, 16),
        GemmaStackConfig(384, 6, 1536, 6, 1, 64),
        GemmaStackConfig(256, 6, 1024, 6, 1, 64),
    ),
}


def median_s(fn, repeats: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, repeats, device))


def build(args, device: torch.device, workdir: Path) -> tuple[RVQPolicy, Pi05Policy]:
    image, vision, vlm, expert = SIZES[args.size]
    settings = RVQSettings(
        chunk_size=args.chunk, action_dim=7, layers=args.layers, latent_steps=args.latent_steps
    )
    tok_path = workdir / "tokenizer.pt"
    stats = {"q01": -torch.ones(7), "q99": torch.ones(7)}
    state = RVQTokenizer(settings).state_dict()
    torch.save({"settings": asdict(settings), "state_dict": state, "stats": stats}, tok_path)
    common = dict(
        cameras=["agentview", "wrist"],
        image_size=image,
        chunk_size=args.chunk,
        n_action_steps=args.chunk,
        vision=vision,
        vlm=vlm,
        expert=expert,
        tokenizer="tabletop",  # bundled; the prompt's length is what matters here
        tokenizer_max_length=args.text,
        dtype="bfloat16" if device.type == "cuda" else "float32",
    )
    if args.size != "full":
        common.update(max_state_dim=8, max_action_dim=8, vocab_size=1024)
    rvq = RVQPolicyConfig(
        **common,
        action_tokenizer=str(tok_path),
        rvq={"type": "rvq", **asdict(settings)},
        draft_layers=args.draft,
    )
    stats_in = {
        k: {"q01": -torch.ones(d).numpy(), "q99": torch.ones(d).numpy()}
        for k, d in (("observation.state", 8), ("action", 7))
    }
    torch.manual_seed(0)
    with torch.device(device):
        policy = RVQPolicy(rvq, dataset_stats=stats_in).eval()
        flow = Pi05Policy(Pi05Config(**common), dataset_stats=stats_in).eval()
    return policy.to(device), flow.to(device)


def batch_of(policy: RVQPolicy, device: torch.device) -> dict:
    size = policy.config.image_size
    g = torch.Generator().manual_seed(0)
    return {
        **{
            f"observation.images.{c}": (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(
                device
            )
            for c in policy.config.cameras
        },
        "observation.state": torch.randn(1, 8, generator=g).to(device),
        "task": ["pick up the red cube to the left of the plate and place it on the plate"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--draft", type=int, default=2)
    parser.add_argument("--latent-steps", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--text", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--name", default=None, help="results name (default rvq_decoding_<size>)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.size == "full":
        print("bench_rvq_decoding: skipped, full size needs a CUDA device (try --size small)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        policy, flow = build(args, device, Path(tmp))
    batch = batch_of(policy, device)
    n = args.repeats
    results: dict = {"settings": vars(args), "device": str(device)}
    with torch.no_grad():
        images, masks, tokens, token_mask, _ = policy._inputs(batch)

        def prefill():
            with policy.autocast():
                return policy.model.encode_prefix(images, masks, tokens, token_mask)

        results["prefill_ms"] = 1e3 * median_s(prefill, n, device)
        cached = prefill()
        codes = torch.zeros(1, args.layers, args.latent_steps, dtype=torch.long, device=device)
        layer_ms = []
        for layer in range(1, args.layers + 1):

            def one_layer(layer=layer):
                with policy.autocast():
                    hidden = policy._suffix_pass(codes[:, : layer - 1], layer, cached=cached)
                return policy.code_head.logits(hidden, layer - 1, 1)

            layer_ms.append(1e3 * median_s(one_layer, n, device))
        results["layer_ms"] = layer_ms
        results["decode_ms"] = {
            k: 1e3
            * median_s(lambda k=k: policy.action_tokenizer.decode(codes, n_layers=k), n, device)
            for k in (args.draft, args.layers)
        }
        chunk = {}
        policy.config.cuda_graphs = False
        for mode in ("dense", "coarse"):
            chunk[f"rvq_{mode}"] = 1e3 * median_s(
                lambda mode=mode: policy.predict_action_chunk(batch, mode), n, device
            )
        if device.type == "cuda":  # the same passes replayed as CUDA graphs (RVQGraphs)
            policy.config.cuda_graphs = True
            phases = {}
            for mode in ("dense", "coarse"):
                runs = []

                def graphed(mode=mode, runs=runs):
                    policy.predict_action_chunk(batch, mode)
                    runs.append(policy.last_chunk["seconds"])

                chunk[f"rvq_{mode}_cuda_graph"] = 1e3 * median_s(graphed, n, device)
                phases[mode] = {
                    k: 1e3 * statistics.median(r[k] for r in runs[-n:]) for k in ("prefix", "draft")
                }
            # P and the draft passes as replayed: t per layer from dense's 8 vs coarse's draft
            results["cuda_graph_ms"] = {
                "prefill": phases["dense"]["prefix"],
                "draft_dense": phases["dense"]["draft"],
                "draft_coarse": phases["coarse"]["draft"],
                "t_per_layer": (phases["dense"]["draft"] - phases["coarse"]["draft"])
                / (args.layers - args.draft),
            }
        flow.config.cuda_graphs = False
        chunk["flow_eager"] = 1e3 * median_s(lambda: flow.predict_action_chunk(batch), n, device)
        if device.type == "cuda":
            flow.config.cuda_graphs = True
            chunk["flow_cuda_graph"] = 1e3 * median_s(
                lambda: flow.predict_action_chunk(batch), n, device
            )
        results["chunk_ms"] = chunk
    p, t = results["prefill_ms"], layer_ms
    dec = results["decode_ms"]
    dense_parts = p + sum(t) + dec[args.layers]
    coarse_parts = p + sum(t[: args.draft]) + dec[args.draft]
    results["best_saving_from_parts"] = 1 - coarse_parts / dense_parts
    results["saving_measured"] = 1 - chunk["rvq_coarse"] / chunk["rvq_dense"]
    graph_lines = []
    if "cuda_graph_ms" in results:
        g = results["cuda_graph_ms"]
        results["best_saving_from_parts_cuda_graph"] = 1 - (
            g["prefill"] + g["draft_coarse"] + dec[args.draft]
        ) / (g["prefill"] + g["draft_dense"] + dec[args.layers])
        results["saving_measured_cuda_graph"] = (
            1 - chunk["rvq_coarse_cuda_graph"] / chunk["rvq_dense_cuda_graph"]
        )
        graph_lines = [
            "",
            "| replayed as CUDA graphs (each phase synchronized) | ms (median) |",
            "|---|---|",
            f"| prefill P | {g['prefill']:.2f} |",
            f"| draft, all {args.layers} layers (dense) | {g['draft_dense']:.2f} |",
            f"| draft, {args.draft} layers (coarse) | {g['draft_coarse']:.2f} |",
            f"| t per layer (dense - coarse) / {args.layers - args.draft} | {g['t_per_layer']:.2f} |",
            "",
            f"With CUDA graphs: best saving from the parts "
            f"{100 * results['best_saving_from_parts_cuda_graph']:.1f}%; measured on whole "
            f"chunks {100 * results['saving_measured_cuda_graph']:.1f}%.",
        ]
    table = [
        f"Batch 1, two {policy.config.image_size}px cameras, {args.text} prompt tokens, "
        f"{args.layers} layers x {args.latent_steps} codes, draft {args.draft}; {device}.",
        "",
        "| part | ms (median) |",
        "|---|---|",
        f"| prefill P (vision + VLM, KV cache) | {p:.2f} |",
        *[f"| layer {i + 1} (t_{i + 1}) | {v:.2f} |" for i, v in enumerate(t)],
        *[f"| tokenizer decode, {k} layers | {v:.3f} |" for k, v in dec.items()],
        "",
        "| whole chunk | ms (median) |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in chunk.items()],
        "",
        f"Best saving adaptive decoding allows (coarse vs dense, from the parts): "
        f"{100 * results['best_saving_from_parts']:.1f}%; measured on whole chunks: "
        f"{100 * results['saving_measured']:.1f}%.",
        *graph_lines,
    ]
    write(args.name or f"rvq_decoding_{args.size}", results, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
