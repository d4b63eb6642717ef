"""Learning-rate schedules as ``_partial_`` factories: ``factory(optimizer) -> LRScheduler``."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, decay_steps: int, final_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warmup to the base lr, then cosine decay to ``final_lr_ratio`` x base lr.

    The shape openpi and LeRobot use for Pi0 (``decay_steps`` <= warmup means constant
    after warmup). Stepped every optimizer step.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if decay_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (decay_steps - warmup_steps))
        return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
