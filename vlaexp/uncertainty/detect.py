"""Runtime failure alarms from per-step uncertainty scores, calibrated by conformal prediction.

This follows FIPER (Römer et al., "Failure Prediction at Runtime for Generative Robot
Policies", NeurIPS 2025, arXiv 2510.09459). Each rollout yields a 1-D series of per-step
uncertainty scores (e.g. RND novelty of the policy's observation embedding) and a success flag.

1. **Aggregate.** Scores are averaged over a short causal sliding window (:func:`windowed`), so
   one noisy step does not raise an alarm but a run of high scores does. The window only looks
   back, so the aggregate is available at runtime from step 0.
2. **Calibrate.** On a small set of *successful* calibration rollouts, a threshold is set at the
   finite-sample conformal quantile (:func:`conformal_quantile`) of their windowed scores:
   either one constant value from the per-episode maxima (:class:`ConstantThreshold`) or one
   value per step (:class:`TimeVaryingThreshold`). For the constant threshold, a new successful
   rollout exchangeable with the calibration ones raises a false alarm with probability at most
   ``1 - q``.
3. **Alarm.** An episode is predicted to fail at the first step whose windowed score is strictly
   above the threshold (:func:`first_alarm`).

Evaluation (:func:`detection_metrics`) treats a failed episode as the positive class and reports
FIPER's metrics, including its timestep-wise accuracy (TWA), which credits a correctly predicted
failure with ``1 - DT`` (DT: normalized detection time) instead of 1. :func:`episode_auroc` gives
a threshold-free episode-level score, and :func:`select_window_and_q` picks the window and
quantile on a validation split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike

THRESHOLD_KINDS = ("constant", "time_varying")
SELECTION_METRICS = ("balanced_accuracy", "accuracy", "TWA", "TPR", "TNR")

log = logging.getLogger(__name__)


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    return int(window)


def _check_q(q: float) -> float:
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in the open interval (0, 1), got {q!r}")
    return float(q)


def _as_series(scores: ArrayLike) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be a 1-D series, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("scores must not be empty")
    return arr


def windowed(scores: ArrayLike, window: int) -> np.ndarray:
    """Causal sliding-window mean: ``out[t] = mean(scores[max(0, t - window + 1) : t + 1])``.

    The first ``window - 1`` steps average over the steps seen so far.
    """
    window = _check_window(window)
    x = _as_series(scores)
    csum = np.concatenate(([0.0], np.cumsum(x)))
    end = np.arange(1, x.size + 1)
    start = np.maximum(0, end - window)
    return (csum[end] - csum[start]) / (end - start)


def conformal_quantile(values: ArrayLike, q: float) -> float:
    """Finite-sample conformal quantile of ``n`` calibration values at level ``q``.

    Returns the ``k``-th smallest value with ``k = ceil((n + 1) * q)``. If ``k > n`` there are
    too few calibration values to guarantee level ``q`` and the result is ``+inf`` (a threshold
    that never fires).
    """
    q = _check_q(q)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("conformal_quantile needs at least one calibration value, got 0")
    if not np.all(np.isfinite(v)):
        raise ValueError("calibration values must be finite")
    n = v.size
    # The tolerance keeps float error from bumping k: 10 * 0.7 is 7.000000000000001, not 7.
    k = math.ceil((n + 1) * q - 1e-9)
    if k > n:
        return math.inf
    return float(np.partition(v, k - 1)[k - 1])


def min_calibration_episodes(q: float) -> int:
    """Fewest calibration values for which :func:`conformal_quantile` at level ``q`` is
    finite: ``ceil((n + 1) q) <= n`` holds from ``n = ceil(q / (1 - q))`` on (19 at 0.95)."""
    q = _check_q(q)
    return math.ceil(q / (1.0 - q) - 1e-9)


@runtime_checkable
class Threshold(Protocol):
    """A calibrated alarm threshold for scores aggregated with ``window``."""

    kind: ClassVar[str]

    @property
    def window(self) -> int:
        """Sliding-window length the threshold was calibrated for."""
        ...

    @property
    def q(self) -> float:
        """Conformal level in (0, 1)."""
        ...

    def at(self, length: int) -> np.ndarray:
        """Threshold for each step of a series of ``length`` steps."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form: ``kind``, ``window``, ``q``, ``values``."""
        ...


def _check_length(length: int) -> int:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    return int(length)


def _parse_dict(d: Mapping[str, Any], kind: str) -> tuple[int, float, list[float]]:
    if d.get("kind") != kind:
        raise ValueError(f"expected kind {kind!r}, got {d.get('kind')!r}")
    return _check_window(d["window"]), _check_q(d["q"]), [float(v) for v in d["values"]]


@dataclass(frozen=True)
class ConstantThreshold:
    """One threshold for every step: conformal quantile of per-episode windowed maxima."""

    kind: ClassVar[str] = "constant"
    window: int
    q: float
    value: float

    def at(self, length: int) -> np.ndarray:
        """``value`` repeated ``length`` times."""
        return np.full(_check_length(length), self.value, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; ``values`` holds the single threshold."""
        return {"kind": self.kind, "window": self.window, "q": self.q, "values": [self.value]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConstantThreshold:
        """Inverse of :meth:`to_dict`."""
        window, q, values = _parse_dict(d, cls.kind)
        if len(values) != 1:
            raise ValueError(f"a constant threshold has one value, got {len(values)}")
        return cls(window=window, q=q, value=values[0])


@dataclass(frozen=True, eq=False)
class TimeVaryingThreshold:
    """One threshold per step, calibrated on the episodes still running at that step.

    ``values[t]`` is the threshold at step ``t`` for ``t < len(values)`` (the length of the
    longest calibration episode). Longer episodes reuse ``values[-1]`` for every later step.
    Late steps are covered by few calibration episodes, so their values are often ``+inf``
    (see :func:`conformal_quantile`): no alarm can fire there, and so none past the longest
    calibration episode either, unless enough calibration episodes are that long.
    """

    kind: ClassVar[str] = "time_varying"
    window: int
    q: float
    values: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        v = np.array(self.values, dtype=np.float64)
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    def at(self, length: int) -> np.ndarray:
        """``values[:length]``, extended with ``values[-1]`` past the longest calibration episode."""
        length = _check_length(length)
        if length <= self.values.size:
            return self.values[:length].copy()
        pad = np.full(length - self.values.size, self.values[-1])
        return np.concatenate((self.values, pad))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; ``values`` holds one threshold per step."""
        return {
            "kind": self.kind,
            "window": self.window,
            "q": self.q,
            "values": [float(v) for v in self.values],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TimeVaryingThreshold:
        """Inverse of :meth:`to_dict`."""
        window, q, values = _parse_dict(d, cls.kind)
        return cls(window=window, q=q, values=np.asarray(values))


def threshold_from_dict(d: Mapping[str, Any]) -> ConstantThreshold | TimeVaryingThreshold:
    """Rebuild a threshold from :meth:`Threshold.to_dict` output, dispatching on ``kind``."""
    kind = d.get("kind")
    if kind == ConstantThreshold.kind:
        return ConstantThreshold.from_dict(d)
    if kind == TimeVaryingThreshold.kind:
        return TimeVaryingThreshold.from_dict(d)
    raise ValueError(
        f"unknown threshold kind {kind!r}; valid choices: {', '.join(THRESHOLD_KINDS)}"
    )


def calibrate(
    kind: str, calib_scores: Sequence[ArrayLike], window: int, q: float
) -> ConstantThreshold | TimeVaryingThreshold:
    """Calibrate a ``"constant"`` or ``"time_varying"`` threshold on successful rollouts.

    ``calib_scores`` holds one per-step score series per successful calibration episode.
    """
    if kind not in THRESHOLD_KINDS:
        raise ValueError(
            f"unknown threshold kind {kind!r}; valid choices: {', '.join(THRESHOLD_KINDS)}"
        )
    window, q = _check_window(window), _check_q(q)
    if len(calib_scores) == 0:
        raise ValueError("calibration needs at least one successful episode, got 0")
    need = min_calibration_episodes(q)
    if len(calib_scores) < need:
        log.warning(
            "%d successful calibration episodes cannot set a level-%.2f threshold (it needs "
            ">= %d): the threshold is +inf and never raises an alarm. Record more calibration "
            "rollouts or lower q.",
            len(calib_scores),
            q,
            need,
        )
    ws = [windowed(s, window) for s in calib_scores]
    if kind == "constant":
        value = conformal_quantile([w.max() for w in ws], q)
        return ConstantThreshold(window=window, q=q, value=value)
    horizon = max(w.size for w in ws)
    values = [conformal_quantile([w[t] for w in ws if w.size > t], q) for t in range(horizon)]
    return TimeVaryingThreshold(window=window, q=q, values=np.asarray(values))


def first_alarm(scores: ArrayLike, threshold: Threshold) -> int | None:
    """First step whose windowed score is strictly above the threshold, or None."""
    w = windowed(scores, threshold.window)
    hits = np.flatnonzero(w > threshold.at(w.size))
    return int(hits[0]) if hits.size else None


def _check_episodes(scores: Sequence[ArrayLike], success: Sequence[bool]) -> np.ndarray:
    if len(scores) != len(success):
        raise ValueError(f"got {len(scores)} score series but {len(success)} success flags")
    if len(scores) == 0:
        raise ValueError("need at least one episode, got 0")
    return np.asarray(success, dtype=bool)


def detection_metrics(
    scores: Sequence[ArrayLike],
    success: Sequence[bool],
    threshold: Threshold,
    *,
    horizon: int | None = None,
) -> dict[str, float | int]:
    """Episode-level alarm metrics; a failed episode is the positive class.

    An episode is alarmed if :func:`first_alarm` fires at any step. Returns:

    - ``TPR`` = TP / failures (NaN without failures), ``TNR`` = TN / successes (NaN without
      successes), ``accuracy`` = (TP + TN) / N, ``balanced_accuracy`` = (TPR + TNR) / 2 (NaN
      if either is NaN; this is what FIPER reports as "accuracy");
    - ``detection_time``: mean normalized detection time DT over detected failures (NaN if
      none). DT = t_alarm / T_episode, or t_alarm / (horizon - 1) if ``horizon`` is given;
    - ``TWA``: FIPER's timestep-wise accuracy, a balanced accuracy in which each detected
      failure counts ``1 - DT`` instead of 1::

          TWA = 1/2 * ( sum_{detected failures} (1 - DT_i) / n_failures
                        + n_tn / n_successes )

      NaN when either class is absent. Source: the paper (arXiv 2510.09459) defines TWA as
      crediting a true positive with 1 - DT; the formula (including the 1/2 class balancing)
      is that of ``_calculate_twa`` in FIPER's evaluation code (github.com/utiasDSL/fiper,
      linked from https://tum-lsy.github.io/fiper_website).
      FIPER's code normalizes DT by ``max_episode_length - 1`` of its dataset: pass
      ``horizon=max_episode_length`` to reproduce that; the default normalizes per episode;
    - counts ``n_tp``, ``n_fn``, ``n_tn``, ``n_fp`` and ``n_episodes``.
    """
    succ = _check_episodes(scores, success)
    series = [_as_series(s) for s in scores]
    if horizon is not None:
        longest = max(s.size for s in series)
        if (
            isinstance(horizon, bool)
            or not isinstance(horizon, int | np.integer)
            or horizon < longest
        ):
            raise ValueError(
                f"horizon must be an integer >= the longest episode ({longest} steps), got {horizon!r}"
            )
    alarms = [first_alarm(s, threshold) for s in series]
    alarmed = np.array([a is not None for a in alarms])
    failed = ~succ

    n_tp = int(np.sum(alarmed & failed))
    n_fn = int(np.sum(~alarmed & failed))
    n_tn = int(np.sum(~alarmed & succ))
    n_fp = int(np.sum(alarmed & succ))
    n_fail, n_succ = n_tp + n_fn, n_tn + n_fp

    dts = [
        t / (s.size if horizon is None else max(1, horizon - 1))
        for s, t, f in zip(series, alarms, failed, strict=True)
        if f and t is not None
    ]
    tpr = n_tp / n_fail if n_fail else math.nan
    tnr = n_tn / n_succ if n_succ else math.nan
    twa = 0.5 * (sum(1.0 - dt for dt in dts) / n_fail + tnr) if n_fail and n_succ else math.nan
    return {
        "TPR": tpr,
        "TNR": tnr,
        "accuracy": (n_tp + n_tn) / len(series),
        "balanced_accuracy": (tpr + tnr) / 2,
        "detection_time": float(np.mean(dts)) if dts else math.nan,
        "TWA": twa,
        "n_tp": n_tp,
        "n_fn": n_fn,
        "n_tn": n_tn,
        "n_fp": n_fp,
        "n_episodes": len(series),
    }


def episode_auroc(scores: Sequence[ArrayLike], success: Sequence[bool], window: int) -> float:
    """AUROC of each episode's maximum windowed score, failure as the positive class.

    NaN when only one class is present.
    """
    succ = _check_episodes(scores, success)
    window = _check_window(window)
    if succ.all() or not succ.any():
        return math.nan
    # Imported here: torchmetrics pulls in torchvision, seconds of import time for a runtime monitor.
    import torch
    from torchmetrics.functional.classification import binary_auroc

    peaks = np.array([windowed(s, window).max() for s in scores])
    # binary_auroc treats values outside [0, 1] as logits and applies a sigmoid, which saturates
    # large scores into ties; dense ranks scaled into (0, 1] keep the exact order and ties.
    _, ranks = np.unique(peaks, return_inverse=True)
    preds = torch.from_numpy((ranks + 1) / (ranks.max() + 1))
    target = torch.from_numpy((~succ).astype(np.int64))
    return float(binary_auroc(preds, target))


def select_window_and_q(
    calib_scores: Sequence[ArrayLike],
    val_scores: Sequence[ArrayLike],
    val_success: Sequence[bool],
    windows: Sequence[int],
    qs: Sequence[float],
    kind: str,
    metric: str = "balanced_accuracy",
) -> tuple[tuple[int, float], list[dict[str, float | int]]]:
    """Grid-search the window and quantile that maximize ``metric`` on a validation split.

    Each ``(window, q)`` is calibrated on ``calib_scores`` (successful calibration rollouts) and
    scored with :func:`detection_metrics` on ``val_scores``/``val_success``. Test rollouts must
    never be passed here: choosing hyperparameters on them makes the test metrics optimistic.

    Returns the best ``(window, q)`` and the full table, one dict per combination with
    ``window``, ``q`` and every detection metric. NaN scores rank last; ties go to the smaller
    window, then the larger ``q`` (fewer false alarms).
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; valid choices: {', '.join(SELECTION_METRICS)}"
        )
    if len(windows) == 0 or len(qs) == 0:
        raise ValueError(f"need at least one window and one q, got windows={windows!r}, qs={qs!r}")
    table: list[dict[str, float | int]] = []
    for window in windows:
        for q in qs:
            th = calibrate(kind, calib_scores, window, q)
            table.append(
                {"window": th.window, "q": th.q, **detection_metrics(val_scores, val_success, th)}
            )
    scored = [row for row in table if not math.isnan(row[metric])]
    if not scored:
        raise ValueError(
            f"{metric} is NaN for every (window, q); the validation split needs both successes and failures"
        )
    best = min(scored, key=lambda row: (-row[metric], row["window"], -row["q"]))
    return (int(best["window"]), float(best["q"])), table
