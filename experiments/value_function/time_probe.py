"""How much of the value labels' pooled ranking the episode step would add to a trained value
function's predictions: a probe, cross-fitted over the test episodes.

The test episodes are split in two halves by episode (seeded). On each half a least-squares
quadratic in (predicted value, t / horizon) is fitted to the labels and applied to the other
half, so no episode is scored by a fit that saw it. Printed: the pooled Spearman, median
per-success Spearman and midpoint AUROC of the predictions alone and of the cross-fitted probe,
and the pooled Spearman within the successes' frames and within the failures'.
A probe on test predictions is a bound on what a post-hoc correction could do, not a trained
model: it says whether the step carries what the frames lack (policy.time_horizon trains it)::

    python experiments/value_function/time_probe.py \
        experiments/value_function/gpu400_pert_c30_value_predictions.csv --horizon 220

``--fit-on`` takes a run's ``value_predictions_val.csv`` (one per predictions file): the same
quadratic fitted on the validation episodes alone and applied to every test episode, a
calibration a run may use, since it never saw the test split. ``--column`` picks the prediction
to combine with the step, e.g. ``expected_value_no_step`` (policy.time_dropout runs)::

    python experiments/value_function/time_probe.py <run>/value_predictions.csv --horizon 220 \
        --fit-on <run>/value_predictions_val.csv --column expected_value_no_step
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vlaexp.value.metrics import ranking_metrics


def read(path: Path, column: str = "expected_value") -> dict[int, dict[str, np.ndarray]]:
    """``{episode: {"t", "label", "pred", "success"}}`` of a value_predictions.csv, the
    prediction from ``column``."""
    rows: dict[int, list] = defaultdict(list)
    with open(path) as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise SystemExit(f"{path} has no column '{column}' (it has {reader.fieldnames})")
        for r in reader:
            rows[int(r["episode_index"])].append(
                (int(r["frame_index"]), float(r["value"]), float(r[column]), r["success"])
            )
    out = {}
    for e, frames in rows.items():
        t, label, pred, success = zip(*sorted(frames), strict=True)
        out[e] = {
            "t": np.array(t, float),
            "label": np.array(label),
            "pred": np.array(pred),
            "success": success[0] in ("1", "True", "true"),
        }
    return out


def features(pred: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(pred), pred, x, pred * x, pred**2, x**2], axis=1)


def fitted(fit: dict, apply: dict, horizon: float) -> dict[int, np.ndarray]:
    """The quadratic in (prediction, t / horizon) fitted to the labels of the episodes ``fit``
    (least squares), applied to the episodes ``apply``."""
    x = np.concatenate([features(ep["pred"], ep["t"] / horizon) for ep in fit.values()])
    y = np.concatenate([ep["label"] for ep in fit.values()])
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    return {e: features(ep["pred"], ep["t"] / horizon) @ w for e, ep in apply.items()}


def cross_fitted(episodes: dict, horizon: float, seed: int = 0) -> dict[int, np.ndarray]:
    ids = np.array(sorted(episodes))
    np.random.default_rng(seed).shuffle(ids)
    halves = [{e: episodes[e] for e in ids[::2]}, {e: episodes[e] for e in ids[1::2]}]
    return {**fitted(halves[0], halves[1], horizon), **fitted(halves[1], halves[0], horizon)}


def scores(episodes: dict, pred: dict[int, np.ndarray]) -> dict[str, float]:
    """value_eval's ranking metrics (:func:`vlaexp.value.metrics.ranking_metrics`) of these
    predictions, and the frame count of each outcome."""
    ids = sorted(episodes)
    metrics = ranking_metrics(
        [pred[e] for e in ids],
        [episodes[e]["label"] for e in ids],
        [episodes[e]["success"] for e in ids],
    )
    keys = ("spearman_pooled", "spearman_pooled_successes", "spearman_pooled_failures")
    out = {k: metrics[k] for k in (*keys, "spearman_median", "midpoint_auroc")}
    for name, want in (("successes", True), ("failures", False)):
        out[f"frames_{name}"] = sum(
            len(ep["label"]) for ep in episodes.values() if ep["success"] == want
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, nargs="+", help="value_predictions.csv files")
    parser.add_argument("--horizon", type=float, required=True, help="the suite's step limit")
    parser.add_argument(
        "--fit-on", type=Path, nargs="+", help="value_predictions_val.csv, one per predictions file"
    )
    parser.add_argument("--column", default="expected_value", help="the prediction to combine")
    args = parser.parse_args()
    if args.fit_on and len(args.fit_on) != len(args.predictions):
        raise SystemExit("--fit-on takes one validation file per predictions file")
    result = {}
    for i, path in enumerate(args.predictions):
        episodes = read(path, args.column)
        alone = {e: ep["pred"] for e, ep in episodes.items()}
        row = {
            "column": args.column,
            "predictions": scores(episodes, alone),
            "with_step_cross_fitted": scores(episodes, cross_fitted(episodes, args.horizon)),
        }
        if args.fit_on:
            val = read(args.fit_on[i], args.column)
            if set(val) & set(episodes):
                raise SystemExit(
                    f"{args.fit_on[i]} shares episodes with {path}: not a held-out fit"
                )
            row["with_step_fitted_on_val"] = scores(episodes, fitted(val, episodes, args.horizon))
        result[str(path)] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
