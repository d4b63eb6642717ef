"""Two arms of a closed-loop comparison, paired episode by episode on their evaluation seeds.

Each arm is one or more ``eval_info.json`` files (one per training seed); the k-th file of one
arm is paired with the k-th of the other, and within a pair the episodes with the same
evaluation seed. Prints, per arm, its successes and the median steps of its successful
episodes, then the pooled wins / losses of the second arm against the first and the exact
McNemar p-value (two-sided binomial test on the discordant pairs)::

    python experiments/value_function/paired_arms.py \
        --a experiments/value_function/gpu400_jitter70_unfiltered_seed{0,1}_eval_info.json \
        --b experiments/value_function/gpu400_jitter70_advantage_seed{0,1}_eval_info.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scipy.stats import binomtest


def episodes(path: Path) -> dict[int, dict]:
    """``{evaluation seed: episode record}`` of one eval_info.json."""
    return {int(e["seed"]): e for e in json.loads(path.read_text())["per_episode"]}


def summary(runs: list[dict[int, dict]]) -> dict:
    done = [e for run in runs for e in run.values() if e["success"]]
    return {
        "episodes": sum(len(run) for run in runs),
        "successes": len(done),
        "median_success_steps": statistics.median(e["steps"] for e in done) if done else None,
    }


def common_seeds(
    a: list[dict[int, dict]], b: list[dict[int, dict]]
) -> tuple[list[dict[int, dict]], list[dict[int, dict]]]:
    """Each pair of runs cut to the evaluation seeds both ran (``--common-seeds``: e.g. a
    20-episode evaluation against the first seeds of an 80-episode one)."""
    if len(a) != len(b):
        raise SystemExit(f"the arms have {len(a)} and {len(b)} runs: pair them one to one")
    cut_a, cut_b = [], []
    for ra, rb in zip(a, b, strict=True):
        both = ra.keys() & rb.keys()
        if not both:
            raise SystemExit("paired runs share no evaluation seed")
        cut_a.append({s: ra[s] for s in sorted(both)})
        cut_b.append({s: rb[s] for s in sorted(both)})
    return cut_a, cut_b


def paired(a: list[dict[int, dict]], b: list[dict[int, dict]]) -> dict:
    """Wins (b succeeds where a fails) and losses of arm b against arm a, with McNemar's p."""
    if len(a) != len(b):
        raise SystemExit(f"the arms have {len(a)} and {len(b)} runs: pair them one to one")
    wins = losses = 0
    for ra, rb in zip(a, b, strict=True):
        if ra.keys() != rb.keys():
            raise SystemExit("paired runs were evaluated on different seeds")
        for seed, ea in ra.items():
            sa, sb = bool(ea["success"]), bool(rb[seed]["success"])
            wins += sb and not sa
            losses += sa and not sb
    n = wins + losses
    p = binomtest(wins, n, 0.5).pvalue if n else 1.0
    return {"wins": wins, "losses": losses, "p_mcnemar": p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="eval_info.json files")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="eval_info.json files")
    parser.add_argument(
        "--common-seeds",
        action="store_true",
        help="compare each pair of runs on the evaluation seeds both ran",
    )
    args = parser.parse_args()
    a, b = [episodes(f) for f in args.a], [episodes(f) for f in args.b]
    if args.common_seeds:
        a, b = common_seeds(a, b)
    print(json.dumps({"a": summary(a), "b": summary(b), "b_vs_a": paired(a, b)}, indent=2))


if __name__ == "__main__":
    main()
