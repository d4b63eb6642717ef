"""Writing benchmark results: JSON for tools, Markdown for people, both with the command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        import mujoco

        info["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    return info


def write(name: str, results: dict[str, Any], table: list[str], notes: str = "") -> Path:
    """``results/<name>.json`` and ``.md``; ``table`` is Markdown lines."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    payload = {"command": command, "machine": machine(), **results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    md = [
        f"# {name}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: `{json.dumps(payload['machine'])}`",
        "",
        *table,
    ]
    if notes:
        md += ["", notes]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(table))
    return RESULTS / f"{name}.json"


def fresh_process_runs(
    script: str, variants: tuple[str, ...], args: list[str], repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Each of ``variants`` measured ``repeats`` times, each time in a fresh process, the
    variants alternating (drift hits them alike): ``python <script> --one <variant> *args``,
    whose last line of output is its measurement as JSON."""
    import subprocess

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for repeat in range(repeats):
        for variant in variants:
            command = [sys.executable, script, "--one", variant, *args]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {repeat} {variant}: {runs[variant][-1]}", flush=True)
    return runs
