"""Evaluation of a distributional value function on held-out episodes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from vlaexp.value.labels import expected_value, value_to_bin


def value_metrics(
    logits: Sequence[torch.Tensor],
    values: Sequence[np.ndarray],
    success: Sequence[bool],
    fault_frames: Sequence[int | None] | None = None,
) -> dict[str, float]:
    """Per episode float[T, n_bins] logits and true values float[T]: test cross-entropy,
    top-1 / top-5 / within +-5 bins accuracy, MAE of the expected value, Spearman correlation
    of predicted and true values (median over episodes, and pooled), and the AUROC of the
    predicted value at each episode's midpoint for telling successes (positive) from failures.
    The per-episode Spearman median is over the successful episodes (``spearman_median``) and,
    apart, over the failed ones; the pooled Spearman over every frame and, apart, over the
    successes' frames.

    ``fault_frames`` (per episode, the frame a scripted fault struck, None if unknown) adds
    how many failures had their fault at or before their midpoint frame, and the midpoint
    AUROC of successes against those failures alone: a failure whose fault comes later looks
    like a success at its midpoint to any model of the frames so far."""
    from torchmetrics.functional.classification import binary_auroc

    all_logits = torch.cat(list(logits))
    true = np.concatenate(list(values))
    n_bins = all_logits.shape[-1]
    bins = torch.from_numpy(value_to_bin(true, n_bins))
    ce = float(torch.nn.functional.cross_entropy(all_logits, bins))
    top5 = all_logits.topk(min(5, n_bins), dim=-1).indices
    pred = expected_value(all_logits).numpy()
    per_episode: dict[bool, list[float]] = {True: [], False: []}  # by outcome
    mids, labels = [], []
    for lg, v, ok in zip(logits, values, success, strict=True):
        ev = expected_value(lg).numpy()
        if len(v) > 2 and np.ptp(v) > 1e-9 and np.ptp(ev) > 1e-9:
            # the same frame over and over (a robot frozen from the start) gives the same
            # prediction up to rounding: no ranking to measure, not a nan that spoils the median
            per_episode[bool(ok)].append(float(spearmanr(ev, v).statistic))
        mids.append(float(ev[len(ev) // 2]))
        labels.append(int(bool(ok)))
    auroc = float("nan")
    if 0 < sum(labels) < len(labels):
        auroc = float(binary_auroc(torch.tensor(mids), torch.tensor(labels)))
    faulted: dict[str, float] = {}
    if fault_frames is not None:
        # failures whose fault struck by the midpoint frame; unknown fault frames are left out
        seen = [
            not ok and f is not None and f <= len(v) // 2
            for v, ok, f in zip(values, success, fault_frames, strict=True)
        ]
        keep = [i for i, ok in enumerate(labels) if ok or seen[i]]
        sub = [labels[i] for i in keep]
        faulted = {
            "failures_faulted_by_midpoint": int(sum(seen)),
            "failures_fault_known": int(
                sum(not ok and f is not None for ok, f in zip(success, fault_frames, strict=True))
            ),
            "midpoint_auroc_faulted": float(
                binary_auroc(torch.tensor([mids[i] for i in keep]), torch.tensor(sub))
            )
            if 0 < sum(sub) < len(sub)
            else float("nan"),
        }
    return {
        "cross_entropy": ce,
        "top1": float((all_logits.argmax(-1) == bins).float().mean()),
        "top5": float((top5 == bins[:, None]).any(-1).float().mean()),
        "within_5_bins": float(((all_logits.argmax(-1) - bins).abs() <= 5).float().mean()),
        "mae": float(np.mean(np.abs(pred - true))),
        # the target's figure: successes only (a failure's clipped start is a run of ties)
        "spearman_median": _median(per_episode[True]),
        "spearman_median_failures": _median(per_episode[False]),
        "spearman_pooled": float(spearmanr(pred, true).statistic),
        "spearman_pooled_successes": _pooled(logits, values, success, True),
        "midpoint_auroc": auroc,
        **faulted,
    }


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def _pooled(logits, values, success, outcome: bool) -> float:
    """Spearman of predicted and true values over every frame of the episodes with this
    outcome (nan where there are none)."""
    keep = [i for i, ok in enumerate(success) if bool(ok) == outcome]
    if not keep:
        return float("nan")
    pred = torch.cat([expected_value(logits[i]) for i in keep]).numpy()
    true = np.concatenate([values[i] for i in keep])
    return float(spearmanr(pred, true).statistic)
