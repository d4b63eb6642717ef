"""Lightning's FSDP strategy, made to resume from vlaexp's checkpoint directories.

Lightning's ``FSDPStrategy`` saves full (consolidated) checkpoints through the Trainer's
CheckpointIO, so ours already writes the LeRobot layout on rank 0 (``model.safetensors``
that loads on one device). Loading, though, only accepts its own single ``.ckpt`` file or
a sharded directory; this subclass reads our directory through the CheckpointIO and then
lets Lightning's full-checkpoint code shard the weights and optimizer state onto the ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import lightning.pytorch.strategies.fsdp as lightning_fsdp

from vlaexp.training.checkpoint import STATE_DIR


class FSDPStrategy(lightning_fsdp.FSDPStrategy):
    """Args (besides Lightning's):
    param_dtype: dtype the shards are all-gathered and computed in (e.g. ``bfloat16``:
        half the all-gather traffic of fp32). None keeps Lightning's choice for the
        Trainer's precision (``bf16-mixed``: fp32 parameters, bf16 gradient reduction);
        the master weights and optimizer state stay fp32 either way.
    """

    def __init__(self, *args: Any, param_dtype: str | None = None, **kwargs: Any) -> None:
        if param_dtype is not None:
            import torch
            from torch.distributed.fsdp import MixedPrecision

            dtype = getattr(torch, param_dtype)
            # the batch stays as the data gives it; autocast casts what the matmuls read
            kwargs["mixed_precision"] = MixedPrecision(
                param_dtype=dtype, reduce_dtype=dtype, cast_root_forward_inputs=False
            )
        super().__init__(*args, **kwargs)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        path = Path(self.broadcast(checkpoint_path))
        if not (path / STATE_DIR).is_dir():
            return super().load_checkpoint(checkpoint_path, weights_only)
        loaded = self.checkpoint_io.load_checkpoint(path)
        # Lightning's full-checkpoint branch is the right code for what follows (weights
        # into the sharded module, optimizer state through FSDP.optim_state_dict_to_load);
        # it only needs to be handed the dict instead of reading a .ckpt file.
        with (
            mock.patch.object(lightning_fsdp, "_is_full_checkpoint", lambda _: True),
            mock.patch.object(lightning_fsdp, "_lazy_load", lambda _: loaded),
        ):
            return super().load_checkpoint(checkpoint_path, weights_only)
