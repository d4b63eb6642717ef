"""Which frames does the value function's advantage call positive? Recomputed on a value run's
test episodes from its returned files (no dataset, no model): ``value_predictions.csv`` (each
test frame's label and expected value), ``advantage.json`` (the run's horizon and per-task
thresholds, set over every frame of every split) and the recording's ``vlaexp_episodes.jsonl``
(success, task, scripted fault and its step). Reports the share of frames labelled positive
among successes, failures before their fault, after it, and after it per fault kind, and
among successes' frames per tenth of the episode (``positive_by_progress``), and by the noise
the episode's recorded actions got (``by_action_noise``: a jittery mix's clean and jittery demos).

``--horizon`` (integers, or ``mc`` for the Monte-Carlo advantage) relabels the same
predictions with other horizons and ``--fraction`` with other positive shares; the thresholds
are then set again, per task, over the test frames alone so that that share of them is
positive (the run's thresholds were set over every split's frames, with its own horizon and
``positive_fraction_target``). One row per horizon and share. Beside the successes' profile,
``all_positive_by_tenth`` is the share of every episode's frames positive per tenth: how much
of each phase's data the "positive" prompt keeps of what the unfiltered policy sees.

    python experiments/value_function/advantage_breakdown.py <value_predictions.csv> \
        <advantage.json> <vlaexp_episodes.jsonl> --out experiments/value_function/<name> \
        [--horizon 10 50 mc] [--fraction 0.3 0.5]

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
    frames_by_group,
    n_step_advantages,
    positive_by_group,
    positive_by_outcome,
    positive_by_progress,
    positive_labels,
)


def breakdown(advantages, positive, records, success, fault) -> dict:
    """The shares of one labelling of the test frames."""
    kinds: dict[str, list[np.ndarray]] = defaultdict(list)
    noise = {ep: records[ep].get("expert_action_noise") for ep in positive}
    for ep, pos in positive.items():
        if fault[ep] is not None:
            kinds[records[ep]["expert_fault"]].append(pos[fault[ep] :])
    return {
        "shares": positive_by_outcome(positive, success, fault),
        "after_fault_by_kind": {
            k: {
                "episodes": len(v),
                "frames": int(sum(map(len, v))),
                "share": float(np.concatenate(v).mean()),
            }
            for k, v in sorted(kinds.items())
        },
        "success_positive_by_tenth": positive_by_progress(positive, success),
        "all_positive_by_tenth": positive_by_progress(positive, dict.fromkeys(positive, True)),
        # by the std of the noise each episode's recorded actions got (a jittery mix,
        # task_suite.perturbation.action_noise_prob; empty for records without the field)
        "by_action_noise": positive_by_group(positive, noise),
        # and the advantages themselves per noise group: a quota drawn from the top of the
        # pooled frames favours the group whose advantages spread wider, whatever their means
        "advantage_by_action_noise": advantage_by_group(advantages, noise),
    }


def advantage_by_group(advantages, groups) -> dict[str, dict]:
    """Per group (episodes mapped to None left out): frames, mean and std of the advantages."""
    return {
        g: {"frames": len(a), "mean": float(a.mean()), "std": float(a.std())}
        for g, a in frames_by_group(advantages, groups).items()
    }


def tenths(values: list) -> str:
    return " ".join("-" if v is None else f"{v:.2f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", type=Path)
    ap.add_argument("advantage", type=Path)
    ap.add_argument("episodes", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.json and <out>.md")
    ap.add_argument(
        "--horizon", nargs="*", default=None, help="Ns, or mc; default: the run's (thresholds too)"
    )
    ap.add_argument(
        "--fraction",
        nargs="*",
        type=float,
        default=None,
        help="positive shares (default: the run's)",
    )
    args = ap.parse_args()
    summary = json.loads(args.advantage.read_text())
    records = read_records(args.episodes)
    relabel = args.horizon is not None or args.fraction is not None
    horizons = (
        [summary["horizon"]]
        if args.horizon is None
        else [None if h == "mc" else int(h) for h in args.horizon]
    )
    fractions = args.fraction or [summary["positive_fraction_target"]]
    predictions = read_predictions(args.predictions, records)
    success = {ep: ok for ep, (_, _, ok) in predictions.items()}
    # the fault frame as the value_advantage stage counts it
    fault = {ep: None if ok else fault_frame(records[ep]) for ep, ok in success.items()}
    tasks = {ep: records[ep]["instruction"] for ep in predictions}
    rows = []
    for horizon in horizons:
        advantages = {
            ep: n_step_advantages(labels, values, horizon)
            for ep, (labels, values, _) in predictions.items()
        }
        for fraction in fractions:
            _, positive = positive_labels(  # the run's thresholds, or set anew on these frames
                advantages, tasks, fraction, None if relabel else summary["thresholds"]
            )
            row = {"horizon": horizon, "positive_fraction": fraction}
            rows.append(row | breakdown(advantages, positive, records, success, fault))
    result = {
        "episodes": len(predictions),
        "thresholds": "the test frames'" if relabel else "the run's",
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    kinds = sorted({k for r in rows for k in r["after_fault_by_kind"]})
    lines = [
        f"Advantage labels on {result['episodes']} test episodes ({result['thresholds']} "
        "thresholds): share of frames positive",
        "",
        "| horizon | positive share set | successes | failures before fault | after fault | "
        + " | ".join(f"after a {k} fault" for k in kinds)
        + " | successes, by tenth of the episode | every episode, by tenth | by action noise "
        + "| advantage by action noise (mean, std) |",
        "|---" * (9 + len(kinds)) + "|",
    ]
    for r in rows:
        sh, by_kind = r["shares"], r["after_fault_by_kind"]
        cells = [
            "Monte-Carlo" if r["horizon"] is None else str(r["horizon"]),
            f"{r['positive_fraction']:.2f}",
            *(
                "-" if sh[k] is None else f"{sh[k]:.3f}"
                for k in ("successes", "failures_before_fault", "failures_after_fault")
            ),
            *(f"{by_kind[k]['share']:.3f}" if k in by_kind else "-" for k in kinds),
            tenths(r["success_positive_by_tenth"]),
            tenths(r["all_positive_by_tenth"]),
            ", ".join(f"{k}: {v:.3f}" for k, v in r["by_action_noise"].items()) or "-",
            ", ".join(
                f"{k}: {v['mean']:+.4f}, {v['std']:.4f}"
                for k, v in r["advantage_by_action_noise"].items()
            )
            or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
