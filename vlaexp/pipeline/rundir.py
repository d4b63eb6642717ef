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


def restart_count() -> int:
    """How often SLURM restarted this job (requeues after a timeout or preemption)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeued() -> bool:
    return restart_count() > 0


def claim_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Mark ``run_dir`` as this run's; return the checkpoint to resume from (or None).

    A directory that already holds a run (its ``run.json``) is only reused with
    ``resume=true``; starting a new run there is an error, so nothing is overwritten. A job
    that SLURM requeued (``SLURM_RESTART_COUNT`` > 0) resumes from ``checkpoints/last``
    when its first launch saved one. Only rank 0 claims: the other ranks of the same
    launch share its directory and just read the checkpoint to resume from.
    """
    from vlaexp.training.distributed import is_rank_zero

    marker = run_dir / MARKER
    if requeued() and marker.exists() and (run_dir / LAST_CHECKPOINT).exists():
        resume = True
    if not is_rank_zero():
        return last_checkpoint(run_dir) if resume else None
    if resume:
        ckpt = last_checkpoint(run_dir)
    elif marker.exists() and not requeued():
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
            "restart": restart_count(),
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"launches": history}, indent=2))
    return ckpt
