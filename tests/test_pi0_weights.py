"""Loading published Pi0 checkpoints: LeRobot's on-disk layout, written small by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.reference.lerobot_pi0 import Small, build_reference, openpi_math, our_config
from vlaexp.errors import MissingPathError, VlaexpError
from vlaexp.policies.pi0.policy import Pi0Policy

STATS = {
    "observation.state": {"mean": np.zeros(8), "std": np.ones(8)},
    "action": {"mean": np.zeros(7), "std": np.ones(7)},
}


@pytest.fixture(scope="module")
def lerobot_state() -> dict[str, torch.Tensor]:
    """A reduced LeRobot PI0Policy state dict, as its model.safetensors stores it."""
    small = Small()
    torch.manual_seed(0)
    with openpi_math(small) as modeling_pi0:
        ref = build_reference(modeling_pi0, small)
    state = {f"model.{k}": v.detach().clone() for k, v in ref.state_dict().items()}
    assert "model.paligemma_with_expert.gemma_expert.lm_head.weight" in state
    return state


def write_checkpoint(root: Path, state: dict[str, torch.Tensor]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, root / "model.safetensors")
    (root / "config.json").write_text(json.dumps({"type": "pi0"}))
    return root


def policy_from(source: Path | str, **changes) -> Pi0Policy:
    cfg = our_config(Small())
    cfg.tokenizer = "tabletop"
    cfg.pretrained = str(source)
    for k, v in changes.items():
        setattr(cfg, k, v)
    return Pi0Policy(cfg, dataset_stats=STATS)


def test_published_layout_loads_every_tensor(lerobot_state, tmp_path: Path) -> None:
    policy = policy_from(write_checkpoint(tmp_path / "ckpt", lerobot_state))
    ours = policy.model.state_dict()
    torch.testing.assert_close(
        ours["vlm.layers.1.mlp.up_proj.weight"],
        lerobot_state[
            "model.paligemma_with_expert.paligemma.model.language_model.layers.1.mlp.up_proj.weight"
        ],
    )
    # transformers >= 5 saves SigLIP without the `vision_model.` level; both layouts load
    (post_ln,) = [v for k, v in lerobot_state.items() if k.endswith("post_layernorm.bias")]
    torch.testing.assert_close(ours["vision_tower.vision_model.post_layernorm.bias"], post_ln)
    torch.testing.assert_close(
        ours["action_time_mlp_in.weight"], lerobot_state["model.action_time_mlp_in.weight"]
    )


def test_older_transformers_layout_and_tied_embedding(lerobot_state, tmp_path: Path) -> None:
    """Checkpoints saved before transformers 4.52 name PaliGemma's parts without `model.`;
    a file that kept only the tied lm_head name still provides the token embedding."""
    old = {}
    for k, v in lerobot_state.items():
        k = k.removeprefix("model.")  # openpi's conversions have no policy prefix
        k = k.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        k = k.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")
        k = k.replace("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector.")
        old[k] = v
    embed = old.pop("paligemma_with_expert.paligemma.language_model.model.embed_tokens.weight")
    old["paligemma_with_expert.paligemma.lm_head.weight"] = embed
    policy = policy_from(write_checkpoint(tmp_path / "old", old))
    torch.testing.assert_close(policy.model.embed_tokens.weight, embed)


def test_missing_unexpected_and_misshapen_tensors_are_listed(lerobot_state, tmp_path: Path) -> None:
    state = dict(lerobot_state)
    del state["model.state_proj.bias"]
    state["model.extra_head.weight"] = torch.zeros(2)
    with pytest.raises(VlaexpError) as err:
        policy_from(write_checkpoint(tmp_path / "bad", state))
    msg = str(err.value)
    assert "1 missing ['state_proj.bias']" in msg
    assert "1 unexpected ['extra_head.weight']" in msg
    with pytest.raises(VlaexpError, match=r"other shapes \['action_in_proj.weight"):
        policy_from(write_checkpoint(tmp_path / "ok", lerobot_state), max_action_dim=16)


def test_pi05_weights_do_not_load_into_pi0(lerobot_state, tmp_path: Path) -> None:
    cfg_dir = write_checkpoint(tmp_path / "ckpt", lerobot_state)
    cfg = our_config(Small())
    cfg.type, cfg.tokenizer, cfg.pretrained = "pi05", "tabletop", str(cfg_dir)
    with pytest.raises(VlaexpError, match=r"missing.*time_mlp_in"):
        Pi0Policy(cfg, dataset_stats=STATS)


def test_missing_paths_and_offline_hub_ids_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match=r"policy\.pretrained"):
        policy_from(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingPathError, match=r"model\.safetensors.*policy\.pretrained"):
        policy_from(tmp_path / "empty")
    with pytest.raises(
        VlaexpError, match=r"Offline, download it elsewhere and set `policy\.pretrained`"
    ):
        policy_from("lerobot/pi0_base")  # HF_HUB_OFFLINE=1 in the tests


def test_lerobot_normalization_stats_are_read(lerobot_state, tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path / "ckpt", lerobot_state)
    save_file(
        {
            "observation.state.mean": torch.full((8,), 2.0),
            "observation.state.std": torch.full((8,), 4.0),
            "action.mean": torch.full((7,), -1.0),
            "action.std": torch.full((7,), 0.5),
        },
        root / "policy_preprocessor_step_2_normalizer_processor.safetensors",
    )
    (root / "policy_preprocessor.json").write_text(
        json.dumps(
            {
                "name": "policy_preprocessor",
                "steps": [
                    {"registry_name": "rename_observations_processor"},
                    {
                        "registry_name": "normalizer_processor",
                        "state_file": "policy_preprocessor_step_2_normalizer_processor.safetensors",
                    },
                ],
            }
        )
    )
    cfg = our_config(Small())
    cfg.tokenizer, cfg.pretrained = "tabletop", str(root)
    policy = Pi0Policy(cfg)  # no dataset stats: the checkpoint's are used
    x = torch.full((1, 8), 6.0)
    torch.testing.assert_close(
        policy.normalizer.normalize("observation.state", x), torch.ones(1, 8)
    )
