"""Pi0 on a GPU: the CUDA-graph sampler (run by `make test-gpu` on the device machine)."""

from __future__ import annotations

import pytest
import torch

from tests.test_pi0_policy import make_batch, tiny

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["pi0_tiny", "pi05_tiny"])
def test_cuda_graph_sampling_equals_eager_sampling(name: str) -> None:
    torch.manual_seed(0)
    policy = tiny(name).cuda().eval()
    batch = batch_on_cuda(3)
    noise = torch.randn(3, 10, 8, device="cuda")
    policy.config.cuda_graphs = False
    eager = policy.predict_action_chunk(batch, noise=noise)
    policy.config.cuda_graphs = True
    graphed = policy.predict_action_chunk(batch, noise=noise)
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)
    sampler = policy._sampler
    other = {**batch, "observation.state": batch["observation.state"] + 1.0}
    policy.predict_action_chunk(other, noise=noise)
    assert policy._sampler is sampler  # same shapes and weights: the graph is replayed
    with torch.no_grad():  # in-place weight updates are seen by the captured graph
        policy.model.action_out_proj.bias.add_(1.0)
    shifted = policy.predict_action_chunk(batch, noise=noise)
    assert not torch.allclose(shifted, graphed)
    policy.predict_action_chunk(batch_on_cuda(2), noise=noise[:2])
    assert policy._sampler is not sampler  # another batch size: captured anew


def batch_on_cuda(b: int) -> dict:
    return {k: v.cuda() if torch.is_tensor(v) else v for k, v in make_batch(b=b).items()}


@pytest.mark.parametrize("variant", ["pi0_tiny", "pi05_tiny"])
def test_unmasked_blocks_in_bf16_are_as_accurate_as_the_dense_mask(variant: str) -> None:
    """An unpadded batch on the GPU in bf16: the loss and gradients of the block-by-block
    unmasked attention (joint.UNMASKED_BLOCKS) are as close to float32's (dense mask) as
    bf16 through the dense mask; compiled (with the graph break of the padding check) too."""
    from vlaexp.policies.pi0 import joint

    g = torch.Generator().manual_seed(0)
    b = 4

    def run(dtype: str, unmasked: bool, compiled: bool = False):
        torch.manual_seed(0)
        policy = tiny(variant, f"policy.dtype={dtype}").cuda().train()
        cfg, model = policy.config, policy.model
        g.manual_seed(0)
        size, dim = cfg.image_size, cfg.max_action_dim
        images = [(torch.rand(b, 3, size, size, generator=g) * 2 - 1).cuda() for _ in range(2)]
        masks = [torch.ones(b, dtype=torch.bool, device="cuda")] * 2
        tokens = torch.randint(0, cfg.vocab_size, (b, cfg.tokenizer_max_length), generator=g)
        tokens = tokens.cuda()
        state = torch.randn(b, cfg.max_state_dim, generator=g).cuda()
        actions, noise = (torch.randn(b, cfg.chunk_size, dim, generator=g).cuda() for _ in "an")
        time = torch.rand(b, generator=g).cuda()
        joint.UNMASKED_BLOCKS = unmasked
        forward = torch.compile(model) if compiled else model
        with policy.autocast():
            loss = (
                forward(images, masks, tokens, tokens > -1, state, actions, noise, time)
                .float()
                .mean()
            )
        loss.backward()
        grad = torch.cat(
            [p.grad.float().flatten() for p in model.parameters() if p.grad is not None]
        )
        return loss.detach(), grad

    try:
        ref_loss, ref_grad = run("float32", False)
        dense_loss, dense_grad = run("bfloat16", False)
        loss, grad = run("bfloat16", True)
        compiled_loss, compiled_grad = run("bfloat16", True, compiled=True)
    finally:
        joint.UNMASKED_BLOCKS = True
        torch._dynamo.reset()

    def err(x: torch.Tensor) -> float:
        return float((x - ref_grad).norm() / ref_grad.norm())

    assert err(grad) <= 1.5 * err(dense_grad) + 1e-3, (err(grad), err(dense_grad))
    assert err(compiled_grad) <= 1.5 * err(dense_grad) + 1e-3
    for x in (loss, compiled_loss):
        assert abs(x - ref_loss) <= 1.5 * abs(dense_loss - ref_loss) + 2e-3 * ref_loss
