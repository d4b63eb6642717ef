"""Which frames does the value function's advantage call positive? Recomputed on a value run's
test episodes from its returned files (no dataset, no model): ``value_predictions.csv`` (each
test frame's label and expected value), ``advantage.json`` (the run's horizon and per-task
thresholds, set over every frame of every split) and the recording's ``vlaexp_episodes.jsonl``
(success, task, scripted fault and its step). Reports the share of frames labelled positive
among successes, failures before their fault, after it, and after it per fault kind, and
among successes' frames per tenth of the episode (``positive_by_progress``).

``--horizon`` (an integer, or ``mc`` for the Monte-Carlo advantage) relabels the same
predictions with another horizon; the thresholds are then set again, per task, over the test
frames alone so that ``positive_fraction_target`` of them are positive (the run's thresholds
were set over every split's frames, with its own horizon).

    python experiments/value_function/advantage_breakdown.py <value_predictions.csv> \
        <advantage.json> <vlaexp_episodes.jsonl> --out experiments/value_function/<name>

(The ``value_advantage`` stage now writes the same split over all frames into
``advantage.json``'s ``positive_by_outcome``; the per-fault-kind rows need the episode records.)
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from ranking_from_predictions import read_predictions, read_records

from vlaexp.data.episodes import fault_frame
from vlaexp.value.advantage import (
    n_step_advantages,
    positive_by_outcome,
    positive_by_progress,
    positive_labels,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", type=Path)
    ap.add_argument("advantage", type=Path)
    ap.add_argument("episodes", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.json and <out>.md")
    ap.add_argument("--horizon", default=None, help="N, or mc; default: the run's (thresholds too)")
    args = ap.parse_args()
    summary = json.loads(args.advantage.read_text())
    records = read_records(args.episodes)
    horizon, thresholds = summary["horizon"], summary["thresholds"]
    if args.horizon is not None:
        horizon = None if args.horizon == "mc" else int(args.horizon)
    advantages, success, fault = {}, {}, {}
    for ep, (labels, values, ok) in read_predictions(args.predictions, records).items():
        advantages[ep] = n_step_advantages(labels, values, horizon)
        success[ep] = ok
        # the fault frame as the value_advantage stage counts it
        fault[ep] = None if ok else fault_frame(records[ep])
    _, positive = positive_labels(  # the run's thresholds, or set anew on these frames
        advantages,
        {ep: records[ep]["instruction"] for ep in advantages},
        summary["positive_fraction_target"],
        thresholds if args.horizon is None else None,
    )
    result: dict = {
        "episodes": len(positive),
        "horizon": horizon,
        "thresholds": "the run's" if args.horizon is None else "the test frames'",
        "shares": positive_by_outcome(positive, success, fault),
        "success_positive_by_tenth": positive_by_progress(positive, success),
    }
    kinds: dict[str, list[np.ndarray]] = defaultdict(list)
    for ep, pos in positive.items():
        if fault[ep] is not None:
            kinds[records[ep]["expert_fault"]].append(pos[fault[ep] :])
    result["after_fault_by_kind"] = {
        k: {
            "episodes": len(v),
            "frames": int(sum(map(len, v))),
            "share": float(np.concatenate(v).mean()),
        }
        for k, v in sorted(kinds.items())
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"Advantage labels on {result['episodes']} test episodes (horizon "
        f"{'Monte-Carlo' if horizon is None else horizon}, {result['thresholds']} thresholds): "
        "share of frames positive",
        "",
        "| frames | share positive |",
        "|---|---|",
        *(f"| {k} | {'-' if v is None else f'{v:.3f}'} |" for k, v in result["shares"].items()),
        *(
            f"| after a {k} fault ({v['episodes']} episodes, {v['frames']} frames) | {v['share']:.3f} |"
            for k, v in result["after_fault_by_kind"].items()
        ),
        "| successes, by tenth of the episode | "
        + " ".join("-" if v is None else f"{v:.2f}" for v in result["success_positive_by_tenth"])
        + " |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
