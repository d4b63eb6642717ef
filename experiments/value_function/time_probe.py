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
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vlaexp.value.metrics import ranking_metrics


def read(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """``{episode: {"t", "label", "pred", "success"}}`` of a value_predictions.csv."""
    rows: dict[int, list] = defaultdict(list)
    with open(path) as f:
        for r in csv.DictReader(f):
            rows[int(r["episode_index"])].append(
                (int(r["frame_index"]), float(r["value"]), float(r["expected_value"]), r["success"])
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


def cross_fitted(episodes: dict, horizon: float, seed: int = 0) -> dict[int, np.ndarray]:
    ids = np.array(sorted(episodes))
    np.random.default_rng(seed).shuffle(ids)
    halves = [set(ids[::2].tolist()), set(ids[1::2].tolist())]
    out = {}
    for fit, apply in (halves, halves[::-1]):
        x = np.concatenate([features(episodes[e]["pred"], episodes[e]["t"] / horizon) for e in fit])
        y = np.concatenate([episodes[e]["label"] for e in fit])
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        for e in apply:
            out[e] = features(episodes[e]["pred"], episodes[e]["t"] / horizon) @ w
    return out


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
    args = parser.parse_args()
    result = {}
    for path in args.predictions:
        episodes = read(path)
        alone = {e: ep["pred"] for e, ep in episodes.items()}
        result[path.name] = {
            "predictions": scores(episodes, alone),
            "with_step_cross_fitted": scores(episodes, cross_fitted(episodes, args.horizon)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
