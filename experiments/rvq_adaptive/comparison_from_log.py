"""Rebuild an `rvq_compare` table from its job's log, for a run that crashed before the table
was written (the comparison now writes it after every row; this is for the run before that fix).

    python experiments/rvq_adaptive/comparison_from_log.py <job>.log --out <name> [--threshold 1.0]

Each row is the dict the stage logged (`rvq_compare <label>: {...}`); the ratios to the dense
row and the Markdown come from the stage's own functions. `--threshold`: the run's entropy
threshold (its `adaptive` row); an `adaptive_t<x>` row's is its label's."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

from vlaexp.tokenizers.compare import comparison_markdown, with_ratios_to_dense

ROW = re.compile(r"rvq_compare (\S+): (\{.*\})\s*$")


def rows_from_log(text: str, threshold: float) -> list[dict]:
    rows = []
    for line in text.splitlines():
        m = ROW.search(line)
        if not m:
            continue
        row = ast.literal_eval(m.group(2))
        label = m.group(1)
        if label == "adaptive":
            row["threshold"] = threshold
        elif label.startswith("adaptive_t"):
            row["threshold"] = float(label[len("adaptive_t") :])
        rows.append(row)
    if not rows:
        raise SystemExit("no `rvq_compare <label>: {...}` line in the log")
    with_ratios_to_dense(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="writes <out>.json and <out>.md")
    ap.add_argument("--threshold", type=float, default=1.0)
    ap.add_argument("--device", default="NVIDIA H200")
    ap.add_argument("--policy", default="(see the log)")
    args = ap.parse_args()
    result = {
        "source": f"rebuilt from {args.log.name}",
        "device": args.device,
        "policy": args.policy,
        "rows": rows_from_log(args.log.read_text(errors="replace"), args.threshold),
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(comparison_markdown(result))
    print(comparison_markdown(result))


if __name__ == "__main__":
    main()
