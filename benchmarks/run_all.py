"""`make bench`: run every ``benchmarks/bench_*.py`` in turn (one process each, so they do not
share caches or threads). Each script writes ``benchmarks/results/<name>.json`` and ``.md``
with the command that produced them. ``BENCH=name1,name2`` runs a subset."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = {n.strip() for n in os.environ.get("BENCH", "").split(",") if n.strip()}
    scripts = sorted(
        p for p in HERE.glob("bench_*.py") if not only or p.stem.removeprefix("bench_") in only
    )
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
