"""The RVQ policy on a GPU: its acting passes replayed as CUDA graphs (`make test-gpu`)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from tests.test_pi0_gpu import batch_on_cuda
from tests.test_rvq_policy import fitted_tokenizer, rvq_policy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_graph_decoding_equals_eager_decoding(tmp_path) -> None:
    torch.manual_seed(0)
    policy = rvq_policy(fitted_tokenizer(tmp_path)).cuda().eval()
    batch = batch_on_cuda(3)

    def both(decoding: str) -> tuple[dict, dict]:
        policy.config.cuda_graphs = False
        eager = policy.predict_codes(batch, decoding)
        policy.config.cuda_graphs = True
        return eager, policy.predict_codes(batch, decoding)

    for decoding in ("dense", "coarse"):
        eager, graphed = both(decoding)
        assert torch.equal(graphed["codes"], eager["codes"])
        assert torch.equal(graphed["layers"], eager["layers"])
        torch.testing.assert_close(graphed["draft_logits"], eager["draft_logits"])
    assert sorted(policy._graphs) == [2, 4]  # one set per draft depth: dense 4, coarse 2
    # adaptive: the refined rows come from the whole-batch refinement graph
    flags = torch.tensor([True, False, True])
    with mock.patch.object(policy.monitor, "should_refine", return_value=flags):
        eager, graphed = both("adaptive")
    assert graphed["layers"].tolist() == [4, 2, 4] and torch.equal(graphed["codes"], eager["codes"])
    torch.testing.assert_close(graphed["logits"], eager["logits"])  # the refinement's too
    dense = policy.predict_codes(batch, "dense")["codes"]
    assert torch.equal(graphed["codes"][[0, 2]], dense[[0, 2]])

    graphs = policy._graphs[2]
    policy.predict_codes(batch, "coarse")
    assert policy._graphs[2] is graphs  # same shapes and weights: replayed
    with torch.no_grad():  # in-place weight updates are seen by the captured graphs
        policy.code_head.out[0].bias[0] += 1e3  # code 0 wins layer 1 everywhere
    assert (policy.predict_codes(batch, "coarse")["codes"][:, 0] == 0).all()
    policy.predict_codes(batch_on_cuda(2), "coarse")
    assert policy._graphs[2] is not graphs  # another batch size: captured anew


def test_gripper_distance_monitor_reads_a_cpu_object_position(tmp_path) -> None:
    """The state is on the GPU, the object's position where the simulator put it (the CPU): the
    fifth GPU session's comparison crashed its gripper-distance row on exactly that."""
    torch.manual_seed(0)
    policy = rvq_policy(fitted_tokenizer(tmp_path)).cuda().eval()
    policy.config.cuda_graphs = False
    batch = batch_on_cuda(2)
    gripper = batch["observation.state"][:, :3].cpu()
    # sample 0 sits on the object, sample 1 a metre away
    batch["observation.object_position"] = torch.stack([gripper[0], gripper[1] + 1.0])
    policy.set_monitor({"kind": "gripper_distance", "threshold": 0.05})
    out = policy.predict_codes(batch, "adaptive")
    assert out["layers"].tolist() == [policy.n_layers, 2]
