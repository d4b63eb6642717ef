"""Which frames does the value function's advantage call positive? Recomputed on a value run's
test episodes from its returned files (no dataset, no model): ``value_predictions.csv`` (each
test frame's label and expected value), ``advantage.json`` (the run's horizon and per-task
thresholds, set over every frame of every split) and the recording's ``vlaexp_episodes.jsonl``
(success, task, scripted fault and its step). Reports the share of frames labelled positive
among successes, failures before their fault, after it, and after it per fault kind.

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
from vlaexp.value.advantage import n_step_advantages, positive_by_outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", type=Path)
    ap.add_argument("advantage", type=Path)
    ap.add_argument("episodes", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.json and <out>.md")
    args = ap.parse_args()
    summary = json.loads(args.advantage.read_text())
    records = read_records(args.episodes)
    positive, success, fault = {}, {}, {}
    for ep, (labels, values, ok) in read_predictions(args.predictions, records).items():
        rec = records[ep]
        adv = n_step_advantages(labels, values, summary["horizon"])
        positive[ep] = adv >= summary["thresholds"][rec["instruction"]]
        success[ep] = ok
        fault[ep] = None if ok else fault_frame(rec)  # as the value_advantage stage counts it
    result: dict = {
        "episodes": len(positive),
        "shares": positive_by_outcome(positive, success, fault),
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
        f"Advantage labels on {result['episodes']} test episodes (horizon {summary['horizon']}, "
        "thresholds of the run): share of frames positive",
        "",
        "| frames | share positive |",
        "|---|---|",
        *(f"| {k} | {'-' if v is None else f'{v:.3f}'} |" for k, v in result["shares"].items()),
        *(
            f"| after a {k} fault ({v['episodes']} episodes, {v['frames']} frames) | {v['share']:.3f} |"
            for k, v in result["after_fault_by_kind"].items()
        ),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
