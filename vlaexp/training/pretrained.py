"""The ``pretrained_model/`` directory: everything needed to rebuild a policy.

Layout (LeRobot's)::

    pretrained_model/
      config.json                      policy config, with "type" naming the policy class
      model.safetensors                weights (normalization statistics excluded)
      normalization_stats.safetensors  the Normalizer's buffers
      train_config.yaml                the resolved run config that produced it (optional)
      <assets>                         files a policy needs besides weights, e.g. its tokenizer
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vlaexp.errors import MissingPathError, VlaexpError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "normalization_stats.safetensors"
TRAIN_CONFIG_FILE = "train_config.yaml"
STATS_PREFIX = "normalizer."
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _tensors_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors; tensors sharing storage (tied weights) are cloned apart."""
    out, seen = {}, set()
    for key, t in state.items():
        t = t.detach().cpu().contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        out[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def write_pretrained(
    directory: str | Path,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    train_config: str | None = None,
    assets: dict[str, bytes] | None = None,
) -> Path:
    """Write the layout above into ``directory`` (created); returns it.

    ``assets`` maps relative paths to file contents (see ``VLAPolicy.pretrained_assets``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v for k, v in state_dict.items() if not k.startswith(STATS_PREFIX)}
    stats = {k[len(STATS_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(STATS_PREFIX)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    save_file(
        _tensors_for_safetensors(weights), directory / WEIGHTS_FILE, metadata={"format": "pt"}
    )
    save_file(_tensors_for_safetensors(stats), directory / STATS_FILE)
    if train_config is not None:
        (directory / TRAIN_CONFIG_FILE).write_text(train_config)
    for relative, content in (assets or {}).items():
        target = directory / relative
        if directory.resolve() not in target.resolve().parents:
            raise ValueError(f"asset path '{relative}' leaves the pretrained_model directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return directory


def is_hub_id(source: str | Path) -> bool:
    """``org/name`` that is not an existing local path."""
    return not Path(source).expanduser().exists() and bool(_HUB_ID.match(str(source)))


def download_from_hub(repo_id: str, setting: str, allow_patterns: list[str] | None = None) -> Path:
    """A hub repo snapshot in the Hugging Face cache; offline, an error naming ``setting``."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as e:
        raise VlaexpError(
            f"Could not download '{repo_id}' from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Offline, download it elsewhere and set `{setting}` to the local directory."
        ) from e


def resolve_pretrained(path_or_repo: str | Path, setting: str) -> Path:
    """A local ``pretrained_model`` dir, or a hub repo id downloaded to the HF cache.

    A run dir or a checkpoint step dir is accepted too and resolved to the
    ``pretrained_model`` inside it.
    """
    path = Path(path_or_repo).expanduser()
    for candidate in (
        path,
        path / "pretrained_model",
        path / "checkpoints" / "last" / "pretrained_model",
    ):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    if is_hub_id(path_or_repo):
        return download_from_hub(str(path_or_repo), setting)
    raise MissingPathError(
        "Pretrained policy", path, setting, hint=f"Expected a directory holding {CONFIG_FILE}."
    )


def read_pretrained(
    directory: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], str | None]:
    """(config, state_dict including normalizer buffers, train_config) of a pretrained dir."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise MissingPathError(
                f"Pretrained policy file {name}", directory / name, "the policy path"
            )
    config = json.loads((directory / CONFIG_FILE).read_text())
    state = dict(load_file(directory / WEIGHTS_FILE))
    if (directory / STATS_FILE).is_file():
        state.update({STATS_PREFIX + k: v for k, v in load_file(directory / STATS_FILE).items()})
    train_cfg = directory / TRAIN_CONFIG_FILE
    return config, state, train_cfg.read_text() if train_cfg.is_file() else None


class SavesPretrained:
    """What every saved model of vlaexp (policies, the value function) does the same way:
    ``config.json`` + ``model.safetensors`` + assets through :func:`write_pretrained`, and
    the same in Lightning checkpoints. The host class has ``config`` (a dataclass),
    ``state_dict()`` and ``train_config_yaml``."""

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def pretrained_assets(self) -> dict[str, bytes]:
        """Files saved beside the weights (relative path -> content); none by default."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vlaexp"] = {
            "policy_config": self.config_dict(),
            "train_config": self.train_config_yaml,
            "assets": self.pretrained_assets(),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the assets into ``directory``."""
        return write_pretrained(
            directory,
            self.config_dict(),
            self.state_dict(),
            self.train_config_yaml,
            assets=self.pretrained_assets(),
        )


def tokenizer_assets(tokenizer: Any, subdir: str = "tokenizer") -> dict[str, bytes]:
    """A transformers tokenizer's files as assets under ``subdir/``: the model reloads
    offline, without the hub."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {f"{subdir}/{f.name}": f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}


def load_state_strictly(
    module: torch.nn.Module, state_dict: dict, directory: Path, what: str
) -> None:
    """``load_state_dict`` that lists missing and unexpected weights (and wrong shapes) in
    one error, never leaving a model silently part random."""
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise VlaexpError(f"Weights in {directory} do not fit the {what}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise VlaexpError(
            f"Weights in {directory} do not match the {what}: missing keys "
            f"{result.missing_keys}, unexpected keys {result.unexpected_keys}"
        )
