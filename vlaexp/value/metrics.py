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
    failure_kinds: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Per episode float[T, n_bins] logits and true values float[T]: test cross-entropy,
    top-1 / top-5 / within +-5 bins accuracy, MAE of the expected value, and the
    :func:`ranking_metrics` of the expected values."""
    all_logits = torch.cat(list(logits))
    true = np.concatenate(list(values))
    n_bins = all_logits.shape[-1]
    bins = torch.from_numpy(value_to_bin(true, n_bins))
    ce = float(torch.nn.functional.cross_entropy(all_logits, bins))
    top5 = all_logits.topk(min(5, n_bins), dim=-1).indices
    pred = expected_value(all_logits).numpy()
    return {
        "cross_entropy": ce,
        "top1": float((all_logits.argmax(-1) == bins).float().mean()),
        "top5": float((top5 == bins[:, None]).any(-1).float().mean()),
        "within_5_bins": float(((all_logits.argmax(-1) - bins).abs() <= 5).float().mean()),
        "mae": float(np.mean(np.abs(pred - true))),
        **ranking_metrics(
            [expected_value(lg).numpy() for lg in logits],
            values,
            success,
            fault_frames,
            failure_kinds,
        ),
    }


def ranking_metrics(
    predicted: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    success: Sequence[bool],
    fault_frames: Sequence[int | None] | None = None,
    failure_kinds: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Per episode predicted (expected) values and true values float[T]: Spearman correlation
    (median over episodes, and pooled) and the AUROC of the predicted value at each episode's
    midpoint for telling successes (positive) from failures (and that of the true values,
    ``midpoint_auroc_labels``). The per-episode Spearman median
    is over the successful episodes (``spearman_median``) and, apart, over the failed ones; the
    pooled Spearman over every frame and, apart, over the successes' and the failures' frames. These need only
    the expected values, so they can be recomputed from ``value_predictions.csv``.

    ``fault_frames`` (per episode, the frame a scripted fault struck, None if unknown) adds
    how many failures had their fault at or before their midpoint frame, and the midpoint
    AUROC of successes against those failures alone: a failure whose fault comes later looks
    like a success at its midpoint to any model of the frames so far.

    ``failure_kinds`` (per episode, what made a failure: :func:`failure_kind`) adds
    ``midpoint_auroc_by_failure_kind``: per kind, its failures' count and the midpoint AUROC of
    every success against those failures alone (a mix of scripted faults and episodes perturbed
    throughout reports each apart), of the predicted values and of the true ones."""
    from torchmetrics.functional.classification import binary_auroc

    def auroc(scores: list[float], labels: list[int]) -> float:
        if not 0 < sum(labels) < len(labels):
            return float("nan")
        return float(binary_auroc(torch.tensor(scores), torch.tensor(labels)))

    per_episode: dict[bool, list[float]] = {True: [], False: []}  # by outcome
    mids, true_mids, labels = [], [], []
    for ev, v, ok in zip(predicted, values, success, strict=True):
        if len(v) > 2 and np.ptp(v) > 1e-9 and np.ptp(ev) > 1e-9:
            # the same frame over and over (a robot frozen from the start) gives the same
            # prediction up to rounding: no ranking to measure, not a nan that spoils the median
            per_episode[bool(ok)].append(float(spearmanr(ev, v).statistic))
        mids.append(float(ev[len(ev) // 2]))
        true_mids.append(float(v[len(v) // 2]))
        labels.append(int(bool(ok)))
    ok_frames = [i for i, ok in enumerate(success) if ok]
    out = {
        # the target's figure: successes only (a failure's clipped start is a run of ties)
        "spearman_median": _median(per_episode[True]),
        "spearman_median_failures": _median(per_episode[False]),
        "spearman_pooled": _spearman(predicted, values, range(len(values))),
        "spearman_pooled_successes": _spearman(predicted, values, ok_frames),
        # and over the failures' frames: a failure run to the step limit counts down to it,
        # which its frames need not show
        "spearman_pooled_failures": _spearman(
            predicted, values, [i for i, ok in enumerate(success) if not ok]
        ),
        "midpoint_auroc": auroc(mids, labels),
        # the same AUROC of the true values: what predicting every label exactly would score
        # (below 1 where a short failure's midpoint is labelled nearer the end than a
        # success's: a small c_fail)
        "midpoint_auroc_labels": auroc(true_mids, labels),
    }
    if fault_frames is not None:
        # failures whose fault struck by the midpoint frame; unknown fault frames are left out
        known = [not ok and f is not None for ok, f in zip(success, fault_frames, strict=True)]
        seen = [k and f <= len(v) // 2 for k, f, v in zip(known, fault_frames, values, strict=True)]
        keep = [i for i, ok in enumerate(labels) if ok or seen[i]]
        out["failures_faulted_by_midpoint"] = int(sum(seen))
        out["failures_fault_known"] = int(sum(known))
        out["midpoint_auroc_faulted"] = auroc([mids[i] for i in keep], [labels[i] for i in keep])
    if failure_kinds is not None:
        by_kind = {}
        for kind in sorted({k for k, ok in zip(failure_kinds, labels, strict=True) if not ok}):
            keep = [i for i, ok in enumerate(labels) if ok or failure_kinds[i] == kind]
            by_kind[kind] = {
                "failures": sum(1 for i in keep if not labels[i]),
                "auroc": auroc([mids[i] for i in keep], [labels[i] for i in keep]),
                # the kind's ceiling: the true values' AUROC (as midpoint_auroc_labels)
                "auroc_labels": auroc([true_mids[i] for i in keep], [labels[i] for i in keep]),
            }
        out["midpoint_auroc_by_failure_kind"] = by_kind
    return out


def failure_kind(outcome: dict) -> str | None:
    """What made an episode fail, from its outcome record (:func:`episode_outcomes`): a scripted
    ``fault``, recorded ``action_noise`` throughout, ``fault+action_noise``, or ``other``
    (neither on record); None for a success."""
    if outcome["success"]:
        return None
    fault = outcome.get("fault_frame") is not None
    noise = bool(outcome.get("action_noise"))
    return {
        (True, False): "fault",
        (False, True): "action_noise",
        (True, True): "fault+action_noise",
    }.get((fault, noise), "other")


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def _spearman(predicted, values, episodes) -> float:
    """Spearman of predicted and true values over every frame of these episodes (nan if none)."""
    episodes = list(episodes)
    if not episodes:
        return float("nan")
    pred = np.concatenate([predicted[i] for i in episodes])
    true = np.concatenate([values[i] for i in episodes])
    return float(spearmanr(pred, true).statistic)
