"""value_eval's ranking metrics recomputed from runs' ``value_predictions.csv`` (the expected
value of every test frame) and the dataset's episode records (``meta/vlaexp_episodes.jsonl``,
for the frame each scripted fault struck), one row per run, as Markdown and JSON:

    python experiments/value_function/ranking_from_predictions.py --episodes <records.jsonl> \
        --out experiments/value_function/<name> RUN_DIR [RUN_DIR ...]

Used for runs whose value_eval predates a metric (the faulted-by-midpoint AUROC) or a fix (a
nan median). Each RUN_DIR holds value_predictions.csv (and value_eval.json, whose figures are
checked against the recomputed ones where both exist); a ``<name>_value_predictions.csv``
copied here (beside ``<name>_value_eval.json``) works as well.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from vlaexp.data.episodes import fault_frame
from vlaexp.value.metrics import failure_kind, ranking_metrics

COLUMNS = (
    "spearman_median",
    "spearman_pooled",
    "midpoint_auroc",
    "midpoint_auroc_labels",
    "midpoint_auroc_faulted",
    "failures_faulted_by_midpoint",
    "failures_fault_known",
    "spearman_median_failures",
    "spearman_pooled_successes",
    "midpoint_auroc_past_only_bound",
    "midpoint_mean_pred_successes",
    "midpoint_mean_label_successes",
    "midpoint_mean_pred_failures",
)


def run_files(run: Path) -> tuple[str, Path, Path]:
    """(name, predictions, value_eval.json) of a run directory, or of a copied
    ``<name>_value_predictions.csv`` beside ``<name>_value_eval.json`` (as in this folder)."""
    if run.is_dir():
        return run.name, run / "value_predictions.csv", run / "value_eval.json"
    name = run.name.removesuffix("_value_predictions.csv")
    return name, run, run.with_name(f"{name}_value_eval.json")


def read_records(path: Path) -> dict[int, dict]:
    """The dataset's episode records (``meta/vlaexp_episodes.jsonl``) by episode index."""
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[int(r["episode_index"])] = r
    return records


def read_predictions(
    predictions: Path, records: dict[int, dict]
) -> dict[int, tuple[np.ndarray, np.ndarray, bool]]:
    """Per test episode of ``value_predictions.csv``, in frame order: (true values, expected
    values, success), checked against the episode records (length and outcome)."""
    frames: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    success: dict[int, bool] = {}
    with open(predictions) as f:
        for row in csv.DictReader(f):
            e = int(row["episode_index"])
            frames[e].append(
                (int(row["frame_index"]), float(row["value"]), float(row["expected_value"]))
            )
            success[e] = bool(int(row["success"]))
    out = {}
    for e in sorted(frames):
        rows = sorted(frames[e])
        if records[e]["length"] != len(rows) or records[e]["success"] != success[e]:
            raise SystemExit(f"{predictions}: episode {e} does not match the records given")
        out[e] = (np.array([v for _, v, _ in rows]), np.array([p for _, _, p in rows]), success[e])
    return out


def fault_label(record: dict) -> str:
    """A failure's scripted fault (``none`` without one), ``+noise`` where its actions were
    jittered throughout: e.g. ``wrong_target``, ``early_release+noise``, ``none+noise``."""
    label = record.get("expert_fault") or "none"
    return label + ("+noise" if record.get("expert_action_noise") else "")


def pairs_lost_by_fault(
    episodes: dict[int, tuple[np.ndarray, np.ndarray, bool]], records: dict[int, dict]
) -> dict[str, dict[str, float]]:
    """Where the midpoint AUROC is lost: per kind of failure (:func:`fault_label`), its
    failures, the (success, failure) pairs it takes part in and those the predictions order
    wrongly (the failure's midpoint valued above the success's; a tie counts half), and the
    AUROC the run would have with that kind's pairs all ordered rightly."""
    mids = {e: (p[len(p) // 2], ok) for e, (_, p, ok) in episodes.items()}
    successes = [m for m, ok in mids.values() if ok]
    failures = [e for e, (_, ok) in mids.items() if not ok]
    pairs = len(successes) * len(failures)
    lost: dict[str, list[float]] = defaultdict(list)
    for e in failures:
        f = mids[e][0]
        lost[fault_label(records[e])].append(
            sum(1.0 if f > s else 0.5 if f == s else 0.0 for s in successes)
        )
    total = sum(sum(v) for v in lost.values())
    return {
        kind: {
            "failures": len(v),
            "pairs": len(v) * len(successes),
            "pairs_lost": float(sum(v)),
            "auroc_if_ranked_right": 1.0 - (total - sum(v)) / pairs,
        }
        for kind, v in sorted(lost.items())
    }


def run_metrics(run: Path, records: dict[int, dict]) -> dict[str, float]:
    _, predictions, logged = run_files(run)
    episodes = read_predictions(predictions, records)
    metrics = ranking_metrics(
        [pred for _, pred, _ in episodes.values()],
        [true for true, _, _ in episodes.values()],
        [ok for _, _, ok in episodes.values()],
        [fault_frame(records[e]) for e in episodes],
        [
            failure_kind(
                {
                    "success": ok,
                    "fault_frame": fault_frame(records[e]),
                    "action_noise": records[e].get("expert_action_noise"),
                }
            )
            for e, (_, _, ok) in episodes.items()
        ],
    )
    # what any model of the frames so far could reach: a failure whose scripted fault (alone,
    # no action noise throughout) strikes after its midpoint frame looks like a success there
    # (chance, 0.5); every other failure can be ranked below every success (1)
    scores = []
    for e, (true, _, ok) in episodes.items():
        if ok:
            continue
        fault = fault_frame(records[e])
        hidden = fault is not None and fault > len(true) // 2
        scores.append(0.5 if hidden and not records[e].get("expert_action_noise") else 1.0)
    metrics["midpoint_auroc_past_only_bound"] = float(np.mean(scores)) if scores else math.nan
    # the predictions and labels at the midpoint frame, by outcome (where a model's AUROC is lost)
    for name, want in (("successes", True), ("failures", False)):
        mids = [(t[len(t) // 2], p[len(p) // 2]) for t, p, ok in episodes.values() if ok == want]
        metrics[f"midpoint_mean_pred_{name}"] = float(np.mean([p for _, p in mids]))
        metrics[f"midpoint_mean_label_{name}"] = float(np.mean([t for t, _ in mids]))
    metrics["midpoint_pairs_lost_by_fault"] = pairs_lost_by_fault(episodes, records)
    if logged.is_file():  # the same figures as value_eval wrote, where it computed them
        old = json.loads(logged.read_text())
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or not isinstance(old.get(key), (int, float)):
                continue  # the per-kind dict, or a figure value_eval did not write
            if not math.isnan(old[key]) and abs(old[key] - value) > 2e-3:
                raise SystemExit(
                    f"{run}: {key} {value:.4f} differs from value_eval's {old[key]:.4f}"
                )
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    args = parser.parse_args()
    records = read_records(args.episodes)
    results = {run_files(run)[0]: run_metrics(run, records) for run in args.runs}
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for run, m in results.items():
        cells = [f"{m[c]:.3f}" if isinstance(m[c], float) else str(m[c]) for c in COLUMNS]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    # the midpoint AUROC by failure kind (a mix of faults and perturbed episodes), the
    # predicted values' and the true values' (the kind's ceiling)
    kinds = sorted({k for m in results.values() for k in m["midpoint_auroc_by_failure_kind"]})
    if kinds:
        lines += [
            "",
            "| run | " + " | ".join(f"{k}: failures, AUROC, labels' AUROC" for k in kinds),
        ]
        lines[-1] += " |"
        lines.append("|---" * (len(kinds) + 1) + "|")
        for run, m in results.items():
            by = m["midpoint_auroc_by_failure_kind"]
            cells = [
                f"{by[k]['failures']}, {by[k]['auroc']:.3f}, {by[k]['auroc_labels']:.3f}"
                if k in by
                else "-"
                for k in kinds
            ]
            lines.append(f"| {run} | " + " | ".join(cells) + " |")
    # the pairs each kind of failure loses (its midpoint valued above a success's)
    faults = sorted({k for m in results.values() for k in m["midpoint_pairs_lost_by_fault"]})
    lines += [
        "",
        "| run | "
        + " | ".join(f"{k}: failures, pairs lost of pairs, AUROC if ranked right" for k in faults)
        + " |",
        "|---" * (len(faults) + 1) + "|",
    ]
    for run, m in results.items():
        by = m["midpoint_pairs_lost_by_fault"]
        cells = [
            f"{by[k]['failures']}, {by[k]['pairs_lost']:g} of {by[k]['pairs']}, "
            f"{by[k]['auroc_if_ranked_right']:.3f}"
            if k in by
            else "-"
            for k in faults
        ]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
