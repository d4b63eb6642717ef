"""Job bookkeeping that keeps sweeps alive: the task wrapper and the sweep summary.

Every job writes ``job_status.json`` in its run dir. A failed job logs its exception with
the path of its config and closes wandb; inside a multirun it then returns instead of
raising, so Hydra's launcher runs the remaining jobs, and :class:`SweepSummary` names the
failed jobs once the sweep ends; the entry point then exits non-zero.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"


@dataclass
class JobFailure:
    """Returned (not raised) by a failed job inside a multirun."""

    run_dir: str
    error: str


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Rank 0 speaks for the job (the ranks of a data-parallel run share its run dir)."""
    from vlaexp.training.distributed import is_rank_zero

    if not is_rank_zero():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps(status, indent=2))


def _close_wandb(failed: bool) -> None:
    """Finish the wandb run if one is open, so the next job of a sweep starts clean."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task function with status files, exception logging and wandb cleanup."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        run_dir = (
            Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
        )
        config_path = run_dir / ".hydra" / "config.yaml"
        started = time.time()
        job = {"run_dir": str(run_dir), "config": str(config_path), "argv": sys.argv[1:]}
        if HydraConfig.initialized():
            job["overrides"] = list(HydraConfig.get().overrides.task)
        failed = False
        try:
            result = task(cfg)
        except Exception as e:
            failed = True
            log.exception("Job failed: %s: %s (config: %s)", type(e).__name__, e, config_path)
            _write_status(
                run_dir,
                {
                    **job,
                    "status": "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                    "seconds": round(time.time() - started, 2),
                },
            )
            if in_multirun():
                return JobFailure(str(run_dir), f"{type(e).__name__}: {e}")
            raise
        finally:
            _close_wandb(failed)
        _write_status(
            run_dir, {**job, "status": "completed", "seconds": round(time.time() - started, 2)}
        )
        return result

    return wrapped


class SweepSummary(Callback):
    """Hydra callback: after a multirun, list every job's status and fail if any failed.

    It reads the jobs' status files, so it works with any launcher (basic, joblib,
    submitit), including ones that run jobs in other processes. Hydra swallows exceptions
    raised by callbacks, so the failures are left in :attr:`failed` for the entry point
    to turn into a non-zero exit status.
    """

    failed: list[str] = []  # noqa: RUF012 (set once per process by the last multirun)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for path in sorted(sweep_dir.glob(f"*/{STATUS_FILE}")):
            status = json.loads(path.read_text())
            rows.append((path.parent.name, status["status"], status.get("error", "")))
        failed = [r for r in rows if r[1] != "completed"]
        lines = [
            f"Sweep summary ({sweep_dir}): {len(rows) - len(failed)}/{len(rows)} jobs completed"
        ]
        lines += [
            f"  {'FAILED ' if s != 'completed' else 'ok     '} {name}  {err}"
            for name, s, err in rows
        ]
        summary = "\n".join(lines)
        (sweep_dir / "sweep_summary.txt").write_text(summary + "\n")
        print(summary, flush=True)
        SweepSummary.failed = [name for name, _, _ in failed]
        if failed:
            log.error(
                "%d of %d jobs failed: %s", len(failed), len(rows), ", ".join(SweepSummary.failed)
            )
