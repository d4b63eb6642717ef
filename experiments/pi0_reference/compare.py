"""Full-size Pi0: vlaexp's implementation vs LeRobot 0.4.4's own, same weights, same inputs.

    python experiments/pi0_reference/compare.py --out experiments/pi0_reference

Builds LeRobot's ``PI0Pytorch`` at its default size (PaliGemma 2B + Gemma-300M expert, 224 px,
48 text tokens, chunk 50) in float32 with LeRobot's initialization, patched to openpi's
math (``tests/reference/lerobot_pi0.py``), moves its weights into vlaexp's ``Pi0Model``
through the checkpoint loader's mapping, feeds both identical images (one camera masked in
one sample), padded tokens, state, actions, noise and time, and compares the per-element
training loss and a sampled chunk. TF32 is off. Also reports how far LeRobot's Pi0 on stock
transformers (without the image-scaling and embedding-normalizer corrections) is from both.
Needs lerobot 0.4.4 and transformers 4.57; writes ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tests.reference.lerobot_pi0 import build_reference, openpi_math  # noqa: E402
from vlaexp.config.policy import Pi0Config  # noqa: E402
from vlaexp.policies.pi0.model import Pi0Model  # noqa: E402
from vlaexp.policies.pi0.weights import map_state_dict  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    started = time.time()
    torch.manual_seed(0)
    with torch.device(device), openpi_math(None) as modeling_pi0:
        ref = build_reference(modeling_pi0, None, device)
    with torch.no_grad():  # move every weight off its init (norms start at 0)
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    cfg = Pi0Config(dtype="float32")
    with torch.device(device):
        ours = Pi0Model(cfg).eval()
    ours.load_state_dict(map_state_dict(ref.state_dict(), pi05=False), strict=True)

    b = args.batch
    g = torch.Generator().manual_seed(1)
    images = [(torch.rand(b, 3, 224, 224, generator=g) * 2 - 1).to(device) for _ in range(2)]
    masks = [torch.ones(b, dtype=torch.bool, device=device) for _ in range(2)]
    masks[1][0] = False
    tokens = torch.randint(0, 257152, (b, 48), generator=g).to(device)
    token_mask = torch.ones(b, 48, dtype=torch.bool, device=device)
    token_mask[0, 20:] = False
    state = torch.randn(b, 32, generator=g).to(device)
    actions = torch.randn(b, 50, 32, generator=g).to(device)
    noise = torch.randn(b, 50, 32, generator=g).to(device)
    t = torch.rand(b, generator=g).to(device)
    results: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    with torch.no_grad():
        with openpi_math(None):
            loss_ref = ref.forward(images, masks, tokens, token_mask, state, actions, noise, t)
            chunk_ref = ref.sample_actions(images, masks, tokens, token_mask, state, noise=noise)
        with openpi_math(None, openpi_fixes=False):
            chunk_stock = ref.sample_actions(images, masks, tokens, token_mask, state, noise=noise)
            loss_stock = ref.forward(images, masks, tokens, token_mask, state, actions, noise, t)
        for impl in ("eager", "sdpa"):
            ours.cfg.attention = impl
            loss = ours(images, masks, tokens, token_mask, state, actions, noise, t)
            chunk = ours.sample_actions(images, masks, tokens, token_mask, state, noise=noise)
            results[impl] = {
                "loss_ref": float(loss_ref.mean()),
                "loss_ours": float(loss.mean()),
                "loss_rel_diff": float((loss.mean() - loss_ref.mean()).abs() / loss_ref.mean()),
                "loss_elementwise_max_rel": float(
                    (loss - loss_ref).abs().max() / loss_ref.abs().max()
                ),
                "chunk_max_abs_diff": float((chunk - chunk_ref).abs().max()),
                "chunk_abs_max": float(chunk_ref.abs().max()),
            }
            print(impl, results[impl], flush=True)
    results["stock_transformers"] = {
        "loss_rel_diff_vs_openpi_math": float(
            (loss_stock.mean() - loss_ref.mean()).abs() / loss_ref.mean()
        ),
        "chunk_max_abs_diff_vs_openpi_math": float((chunk_stock - chunk_ref).abs().max()),
    }
    results["targets"] = {"loss_rel": 1e-4, "chunk_abs": 1e-3}
    results["command"] = shlex.join(
        ["python", "experiments/pi0_reference/compare.py", *sys.argv[1:]]
    )
    results["seconds"] = round(time.time() - started, 1)
    print(json.dumps(results, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
