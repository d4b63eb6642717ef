"""Loading the published Pi0 / Pi0.5 weights (LeRobot's and openpi-PyTorch's layout).

``lerobot/pi0_base``, ``lerobot/pi05_base``, ``lerobot/pi05_libero_finetuned`` and openpi's
PyTorch conversions store ``model.safetensors`` with names such as::

    [model.]paligemma_with_expert.paligemma.model.language_model.layers.3.mlp.up_proj.weight
    [model.]paligemma_with_expert.gemma_expert.model.layers.3.input_layernorm.dense.weight
    [model.]action_in_proj.weight

:data:`RULES` maps them onto :class:`~vlaexp.policies.pi0.model.Pi0Model`'s names (the
transformers >= 4.52 layout above, the older ``paligemma.language_model.model`` one, and the
one LeRobot saves under transformers 5, whose SigLIP lacks the ``vision_model`` level).
Two tensors are known and deliberately not loaded, because action generation never uses
them: the expert's ``lm_head`` and PaliGemma's ``lm_head`` (tied to the token embedding,
which is loaded from it when a file stores the tied tensor under that name only).
Everything else must match exactly: a missing, unexpected or misshapen tensor is an error
that lists them, never a model left with random weights.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vlaexp.errors import MissingPathError, VlaexpError
from vlaexp.training.pretrained import WEIGHTS_FILE, download_from_hub, is_hub_id

log = logging.getLogger(__name__)

_PG = r"paligemma_with_expert\.paligemma\."
RULES: list[tuple[re.Pattern[str], str]] = [
    # saved under transformers >= 5, whose SiglipVisionModel has no `vision_model` level
    (
        re.compile(rf"^{_PG}(model\.)?vision_tower\.(?!vision_model\.)"),
        "vision_tower.vision_model.",
    ),
    (re.compile(rf"^{_PG}(model\.)?vision_tower\."), "vision_tower."),
    (re.compile(rf"^{_PG}(model\.)?multi_modal_projector\.linear\."), "projector."),
    (
        re.compile(rf"^{_PG}(model\.language_model|language_model\.model)\.embed_tokens\."),
        "embed_tokens.",
    ),
    (re.compile(rf"^{_PG}(model\.language_model|language_model\.model)\."), "vlm."),
    (re.compile(r"^paligemma_with_expert\.gemma_expert\.model\."), "expert."),
]
PALIGEMMA_LM_HEAD = re.compile(rf"^{_PG}(language_model\.)?lm_head\.weight$")
EXPERT_LM_HEAD = re.compile(r"^paligemma_with_expert\.gemma_expert\.lm_head\.weight$")
# Pi0 checkpoints converted by openpi name the action-time MLP like Pi0.5's (LeRobot renames too).
PI0_RENAMES = {"time_mlp_in.": "action_time_mlp_in.", "time_mlp_out.": "action_time_mlp_out."}


def map_key(key: str, pi05: bool) -> str | None:
    """Our name for a checkpoint tensor, or None for the unused ``lm_head`` tensors."""
    key = key.removeprefix("model.")
    if EXPERT_LM_HEAD.match(key) or PALIGEMMA_LM_HEAD.match(key):
        return None
    for pattern, target in RULES:
        if pattern.match(key):
            return pattern.sub(target, key)
    if not pi05:
        for old, new in PI0_RENAMES.items():
            if key.startswith(old):
                return new + key[len(old) :]
    return key


def map_state_dict(state: dict[str, torch.Tensor], pi05: bool) -> dict[str, torch.Tensor]:
    """Checkpoint tensors under our names (unused ``lm_head`` tensors left out)."""
    out: dict[str, torch.Tensor] = {}
    lm_head = None
    for key, tensor in state.items():
        ours = map_key(key, pi05)
        if ours is None:
            if PALIGEMMA_LM_HEAD.match(key.removeprefix("model.")):
                lm_head = tensor
            continue
        if ours in out:
            raise VlaexpError(f"Two checkpoint tensors map to '{ours}' (one of them: '{key}')")
        out[ours] = tensor
    if "embed_tokens.weight" not in out and lm_head is not None:
        out["embed_tokens.weight"] = lm_head  # PaliGemma ties them; the file kept one name
    return out


def check_against(model: nn.Module, mapped: dict[str, torch.Tensor], source: str) -> None:
    """Raise listing every missing, unexpected and misshapen tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {expected[k]}"
        for k in set(mapped) & set(expected)
        if tuple(mapped[k].shape) != expected[k]
    )
    if missing or unexpected or shapes:
        raise VlaexpError(
            f"Weights in {source} do not fit this policy (check policy.type and its widths): "
            f"{len(missing)} missing {missing[:20]}, {len(unexpected)} unexpected "
            f"{unexpected[:20]}, {len(shapes)} with other shapes {shapes[:20]}"
        )


def resolve(source: str | Path, setting: str) -> Path:
    """A local directory holding ``model.safetensors``, or a hub repo id downloaded to the
    Hugging Face cache (weights, config and processor files only)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise MissingPathError(
                "Pretrained weights",
                path / WEIGHTS_FILE,
                setting,
                hint="Expected model.safetensors.",
            )
        return path
    if not is_hub_id(source):
        raise MissingPathError(
            "Pretrained weights", path, setting, hint="Give a directory or a hub id (org/name)."
        )
    return download_from_hub(
        str(source), setting, allow_patterns=[WEIGHTS_FILE, "*.json", "policy_preprocessor*"]
    )


def load_pretrained_weights(model: nn.Module, source: str | Path, pi05: bool, setting: str) -> Path:
    """Load ``source``'s weights into ``model`` (a Pi0Model), strictly; returns the directory."""
    directory = resolve(source, setting)
    mapped = map_state_dict(load_file(directory / WEIGHTS_FILE), pi05)
    check_against(model, mapped, str(directory / WEIGHTS_FILE))
    model.load_state_dict(mapped, strict=True)
    log.info("Loaded %d tensors from %s", len(mapped), directory)
    return directory


def read_lerobot_stats(directory: Path) -> dict[str, dict[str, np.ndarray]] | None:
    """Normalization statistics saved by LeRobot's policy preprocessor, if any.

    LeRobot >= 0.4 keeps them in the normalizer step's file named by
    ``policy_preprocessor.json`` (tensors ``<feature>.<stat>``, e.g. ``action.q01``).
    """
    config = directory / "policy_preprocessor.json"
    if not config.is_file():
        return None
    steps = json.loads(config.read_text()).get("steps", [])
    files = [
        s["state_file"]
        for s in steps
        if "normalizer" in s.get("registry_name", "") and "state_file" in s
    ]
    if not files:
        return None
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(directory / files[0]).items():
        feature, _, stat = key.rpartition(".")
        stats.setdefault(feature, {})[stat] = tensor.float().numpy()
    return stats
