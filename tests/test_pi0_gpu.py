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
