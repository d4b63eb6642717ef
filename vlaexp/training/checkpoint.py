"""Checkpoints in LeRobot's layout, written through Lightning's CheckpointIO plugin API.

::

    checkpoints/
      000500/
        pretrained_model/    config.json, model.safetensors, normalization stats (pretrained.py)
        training_state/
          optimizer_state.safetensors, optimizer_param_groups.json
          scheduler_state.json, rng_state.safetensors, training_step.json
          trainer_state.pt   Lightning's loop/callback progress (what `resume` needs besides)
      last -> 000500         relative link, moved only after a checkpoint is complete

Lightning's ModelCheckpoint writes one ``.ckpt`` file per checkpoint; it cannot produce
this directory layout, hence :class:`LeRobotCheckpointIO` (the format) and
:class:`StepCheckpoint` (when to save, the ``last`` link).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors.torch import load_file, save_file

from vlaexp.training.pretrained import read_pretrained, write_pretrained

PRETRAINED_DIR = "pretrained_model"
STATE_DIR = "training_state"
LAST = "last"
# Keys of Lightning's checkpoint dict stored in their own files; the rest goes to trainer_state.pt.
_SPLIT_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "vlaexp", "global_step", "epoch")


def _flatten_optimizer(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Optimizer state_dicts -> (tensors keyed ``{i}.{n}.{name}``, JSON-able rest).

    ``n`` is the position of the parameter's key in ``rest[i]["keys"]``: plain optimizers
    key their state by parameter index, FSDP's full optimizer state by parameter name
    (which holds dots), and both must come back as they were saved."""
    tensors, rest = {}, []
    for i, sd in enumerate(states):
        keys = list(sd["state"])
        scalars: dict[str, dict[str, Any]] = {}
        for n, pid in enumerate(keys):
            for name, value in sd["state"][pid].items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{i}.{n}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(n), {})[name] = value
        rest.append({"param_groups": sd["param_groups"], "scalars": scalars, "keys": keys})
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: list[Any]) -> list[dict[str, Any]]:
    states = []
    for i, meta in enumerate(rest):
        keys = meta.get("keys")  # absent in checkpoints written before FSDP support: indices

        def key(n: str, keys=keys) -> Any:
            return keys[int(n)] if keys is not None else int(n)

        state: dict[Any, dict[str, Any]] = {}
        for flat, value in tensors.items():
            idx, n, name = flat.split(".", 2)
            if int(idx) == i:
                state.setdefault(key(n), {})[name] = value
        for n, scalars in meta["scalars"].items():
            state.setdefault(key(n), {}).update(scalars)
        states.append({"state": state, "param_groups": meta["param_groups"]})
    return states


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Python, NumPy, torch (and CUDA) generator states as tensors + string metadata."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    tensors["python.state"] = torch.tensor(py_state[1], dtype=torch.int64)
    meta = {
        "numpy": json.dumps([np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]),
        "python": json.dumps([py_state[0], py_state[2]]),
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, gauss = json.loads(meta["numpy"])
    np.random.set_state(
        (name, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, gauss)
    )
    version, gauss_next = json.loads(meta["python"])
    random.setstate((version, tuple(int(x) for x in tensors["python.state"].tolist()), gauss_next))


class LeRobotCheckpointIO(CheckpointIO):
    """Saves/loads Lightning checkpoint dicts as the directory layout in the module docstring.

    Writes go to ``<path>.tmp`` and are renamed into place, so a crash never leaves a
    half-written checkpoint under a step name.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        meta = checkpoint.get("vlaexp", {})
        write_pretrained(
            tmp / PRETRAINED_DIR,
            config=meta.get("policy_config", {}),
            state_dict=checkpoint["state_dict"],
            train_config=meta.get("train_config"),
            assets=meta.get("assets"),
        )
        state_dir = tmp / STATE_DIR
        state_dir.mkdir(parents=True)
        opt_tensors, opt_rest = _flatten_optimizer(checkpoint.get("optimizer_states", []))
        save_file(opt_tensors, state_dir / "optimizer_state.safetensors")
        (state_dir / "optimizer_param_groups.json").write_text(json.dumps(opt_rest, indent=2))
        (state_dir / "scheduler_state.json").write_text(
            json.dumps(checkpoint.get("lr_schedulers", []), indent=2)
        )
        rng_tensors, rng_meta = capture_rng_state()
        save_file(rng_tensors, state_dir / "rng_state.safetensors", metadata=rng_meta)
        (state_dir / "training_step.json").write_text(
            json.dumps({"step": checkpoint["global_step"], "epoch": checkpoint["epoch"]})
        )
        torch.save(
            {k: v for k, v in checkpoint.items() if k not in _SPLIT_KEYS},
            state_dir / "trainer_state.pt",
        )
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: Any = None
    ) -> dict[str, Any]:
        path = Path(path).resolve()
        state_dir = path / STATE_DIR
        checkpoint: dict[str, Any] = torch.load(
            state_dir / "trainer_state.pt", map_location="cpu", weights_only=False
        )
        config, state_dict, train_config = read_pretrained(path / PRETRAINED_DIR)
        checkpoint["state_dict"] = state_dict
        checkpoint["vlaexp"] = {"policy_config": config, "train_config": train_config}
        rest = json.loads((state_dir / "optimizer_param_groups.json").read_text())
        checkpoint["optimizer_states"] = _unflatten_optimizer(
            load_file(state_dir / "optimizer_state.safetensors"), rest
        )
        checkpoint["lr_schedulers"] = json.loads((state_dir / "scheduler_state.json").read_text())
        step = json.loads((state_dir / "training_step.json").read_text())
        checkpoint["global_step"], checkpoint["epoch"] = step["step"], step["epoch"]
        from safetensors import safe_open

        with safe_open(state_dir / "rng_state.safetensors", "pt") as f:
            checkpoint["vlaexp"]["rng_state"] = (
                {k: f.get_tensor(k) for k in f.keys()},  # noqa: SIM118 (safe_open is not a dict)
                f.metadata(),
            )
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        shutil.rmtree(path, ignore_errors=True)


class StepCheckpoint(pl.Callback):
    """Save ``checkpoints/<step:06d>/`` every ``save_freq`` steps and at the end of training.

    Args:
        dirpath: the ``checkpoints`` directory.
        save_freq: optimizer steps between checkpoints.
        keep_last: keep only this many newest step directories (None keeps all).
    """

    def __init__(
        self, dirpath: str | Path, save_freq: int = 1000, keep_last: int | None = None
    ) -> None:
        if save_freq < 1:
            raise ValueError(f"callbacks.step_checkpoint.save_freq must be >= 1, got {save_freq}")
        self.dirpath = Path(dirpath)
        self.save_freq = save_freq
        self.keep_last = keep_last
        self._last_saved_step = -1

    def _enabled(self, trainer: pl.Trainer) -> bool:
        return not trainer.fast_dev_run and not trainer.sanity_checking

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self._enabled(trainer) and trainer.global_step % self.save_freq == 0:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled(trainer):
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> Path | None:
        step = trainer.global_step
        if step == self._last_saved_step or step == 0:
            return None
        path = self.dirpath / f"{step:06d}"
        trainer.save_checkpoint(path)
        self._last_saved_step = step
        if trainer.is_global_zero:
            link = self.dirpath / LAST
            tmp_link = self.dirpath / f".{LAST}.tmp"
            if tmp_link.is_symlink():
                tmp_link.unlink()
            os.symlink(path.name, tmp_link)  # relative: the run dir can be moved
            os.replace(tmp_link, link)
            self._prune()
        trainer.strategy.barrier("vlaexp_checkpoint")
        return path

    def _prune(self) -> None:
        if not self.keep_last:
            return
        steps = sorted(
            p
            for p in self.dirpath.iterdir()
            if p.is_dir() and not p.is_symlink() and p.name.isdigit()
        )
        for old in steps[: -self.keep_last]:
            shutil.rmtree(old)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        rng = checkpoint.get("vlaexp", {}).get("rng_state")
        if rng is not None:
            restore_rng_state(*rng)
        self._last_saved_step = checkpoint.get("global_step", -1)
