"""Running the entry point as users do, in a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_vlaexp(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m vlaexp ARGS`` in ``cwd`` with wandb and the hub offline; output captured."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vlaexp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
