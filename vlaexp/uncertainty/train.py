"""Training one RND on a token store with the shared Lightning Trainer, and loading it back."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from vlaexp.errors import VlaexpError
from vlaexp.training.trainer import build_trainer
from vlaexp.uncertainty.rnd import RND, RNDModule, for_inference
from vlaexp.uncertainty.tokens import TokenStore

log = logging.getLogger(__name__)

MODEL_FILE = "rnd.pt"


def _loader(store: TokenStore, indices: list[int], batch: int, shuffle: bool, workers: int):
    return DataLoader(
        _Indexed(store, indices),
        batch_size=batch,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=_as_batch,
        persistent_workers=workers > 0,
    )


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    """The collate of :class:`_Indexed`: its batches come gathered as one tensor already."""
    return batch


class _Indexed(Dataset):
    """``indices`` of a :class:`TokenStore`, gathered a batch at a time."""

    def __init__(self, store: TokenStore, indices: list[int]) -> None:
        self.store, self.indices = store, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int]) -> torch.Tensor:
        return self.store.gather([self.indices[p] for p in positions])


def train_rnd(
    store_dir: Path,
    out_dir: Path,
    cfg: Any,
    loggers: Any = (),
    camera: str = "",
    task_type: str = "",
) -> dict[str, Any]:
    """Fit an RND on ``store_dir``'s tokens (``cfg.rnd.train``: Adam, batch, epochs, early
    stopping on a held-out fraction); the best epoch's weights go to ``out_dir/rnd.pt``."""
    tcfg = cfg.rnd.train
    store = TokenStore(store_dir)
    if len(store) < 2:
        raise VlaexpError(f"token store {store_dir} holds {len(store)} tokens: nothing to train on")
    train_idx, val_idx = store.split(tcfg.val_fraction, cfg.rnd.seed)
    torch.manual_seed(int(cfg.rnd.seed))  # the target network is the random part of RND
    module = RNDModule(store.dim, lr=tcfg.lr, camera=camera, task_type=task_type)
    monitor = f"{module.prefix}/val_loss"
    ckpt = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=monitor, mode="min", save_top_k=1, filename="best"
    )
    early = EarlyStopping(monitor=monitor, mode="min", patience=tcfg.patience)
    # A step cap (a brief run) also caps the epoch, so that validation, early stopping and the
    # best checkpoint still happen; validation then reads at most as many batches.
    cap = tcfg.max_steps if tcfg.max_steps and tcfg.max_steps > 0 else None
    trainer = build_trainer(
        cfg,
        loggers,
        [ckpt, early],
        overrides={
            "max_epochs": tcfg.max_epochs,
            "max_steps": tcfg.max_steps,
            "max_time": None,
            "val_check_interval": None,
            "check_val_every_n_epoch": 1,
            "gradient_clip_val": None,
            "accumulate_grad_batches": 1,
            "precision": "32-true",
            "limit_train_batches": cap,
            "limit_val_batches": cap,
        },
        policy=False,
    )
    trainer.fit(
        module,
        _loader(store, train_idx, tcfg.batch_size, True, tcfg.num_workers),
        _loader(store, val_idx, tcfg.batch_size, False, tcfg.num_workers),
    )
    if not ckpt.best_model_path:
        raise VlaexpError(f"RND training for '{camera}' ended before its first validation")
    best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)
    module.load_state_dict(best["state_dict"])
    val_loss = float(ckpt.best_model_score)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "in_dim": store.dim,
            "camera": camera,
            "task_type": task_type,
            "val_loss": val_loss,
            "state_dict": module.rnd.state_dict(),
        },
        out_dir / MODEL_FILE,
    )
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    log.info(
        "RND %s/%s: %d tokens, %d epochs (%d steps), best val loss %.4g",
        task_type,
        camera,
        len(store),
        trainer.current_epoch,
        trainer.global_step,
        val_loss,
    )
    return {
        "val_loss": val_loss,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "tokens": len(store),
        "in_dim": store.dim,
    }


def load_rnd(
    path: Path, device: torch.device | str = "cpu", precision: str | None = "float32"
) -> RND:
    """An RND saved by :func:`train_rnd`, in eval mode on ``device``, scoring in ``precision``
    (:func:`~vlaexp.uncertainty.rnd.for_inference`: float32, bfloat16, or int8 on the CPU);
    ``precision=None``: float32 as read, for a caller that converts it itself (no copy)."""
    path = Path(path)
    if not path.is_file():
        raise VlaexpError(f"No trained RND at {path}: run the rnd_train stage")
    data = torch.load(path, map_location="cpu", weights_only=False)
    missing = {"in_dim", "state_dict"} - set(data)
    if missing:
        raise VlaexpError(f"{path} is not an RND file (missing {sorted(missing)})")
    model = RND(int(data["in_dim"]))
    model.load_state_dict(data["state_dict"])
    # what it was trained for travels with it, so a mismatched RND is refused before scoring
    model.meta = {k: data.get(k) for k in ("in_dim", "camera", "task_type", "val_loss")}
    model = model.to(device).eval()
    return model if precision is None else for_inference(model, precision)
