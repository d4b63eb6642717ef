"""Claiming a run directory: new runs never overwrite, resumed runs need a checkpoint."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from vlaexp.errors import ConfigError, MissingPathError

MARKER = "run.json"
LAST_CHECKPOINT = Path("checkpoints") / "last"


def last_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/last``, resolved; an error naming the setting if missing."""
    link = run_dir / LAST_CHECKPOINT
    if not link.exists():
        raise MissingPathError(
            "Checkpoint to resume from",
            link,
            "hydra.run.dir (the run to resume) with resume=true",
            hint="Point hydra.run.dir at a run that saved a checkpoint, or drop resume=true.",
        )
    return link.resolve()


def claim_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Mark ``run_dir`` as this run's; return the checkpoint to resume from (or None).

    A directory that already holds a run (its ``run.json``) is only reused with
    ``resume=true``; starting a new run there is an error, so nothing is overwritten.
    """
    marker = run_dir / MARKER
    if resume:
        ckpt = last_checkpoint(run_dir)
    elif marker.exists():
        raise ConfigError(
            f"Run dir '{run_dir}' already holds a run ({marker}). Pass resume=true to continue "
            "it, or choose another hydra.run.dir."
        )
    else:
        ckpt = None
    history = json.loads(marker.read_text())["launches"] if marker.exists() else []
    history.append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": sys.argv[1:],
            "resume_from": str(ckpt) if ckpt else None,
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"launches": history}, indent=2))
    return ckpt
