"""Rank-safe runs: which process is rank 0, one launch time for every rank, and when a
multi-process Trainer may start.

Ranks come from whoever launched the processes: Lightning's own subprocess launcher
(``trainer=ddp`` on one host), ``torchrun``, or SLURM (``srun``, submitit). Lightning reads
them from the environment (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``); so do we, before any
Trainer exists, to decide which process claims the run dir and runs the rank-0-only stages.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from vlaexp.errors import ConfigError

LAUNCH_TIME_ENV = "VLAEXP_LAUNCH_TIME"


def global_rank() -> int:
    """This process's global rank as Lightning will see it (0 when not distributed)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_rank_zero() -> bool:
    return global_rank() == 0


def _under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "GROUP_RANK" in os.environ


def _external_world_size() -> int:
    """Processes started by torchrun or srun for this job (1 when none did)."""
    if _under_torchrun():
        return int(os.environ.get("WORLD_SIZE", "1"))
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def _external_nodes() -> int:
    if _under_torchrun():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        return max(1, int(os.environ.get("WORLD_SIZE", "1")) // max(local, 1))
    return int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES", "1")))


def _process_start_time(pid: int) -> float:
    """Wall-clock start time of process ``pid`` (Linux /proc), to the second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # field 22 of stat(5); the first two are cut off above
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return float(boot + ticks // os.sysconf("SC_CLK_TCK"))


def launch_time() -> float:
    """One time stamp shared by every rank of a launch (run dirs are named after it).

    Each rank composes its own config, so a plain ``${now:}`` could name two run dirs when
    ranks start on either side of a second. In order: ``$VLAEXP_LAUNCH_TIME`` (epoch
    seconds, set by the user for multi-node launches); under torchrun or srun on one node
    the start time of the launcher process that spawned every rank (the elastic agent,
    slurmstepd); otherwise now. Several nodes without ``$VLAEXP_LAUNCH_TIME`` is an
    error: nothing else is common to all of them.
    """
    if LAUNCH_TIME_ENV in os.environ:
        try:
            return float(os.environ[LAUNCH_TIME_ENV])
        except ValueError:
            raise ConfigError(
                f"${LAUNCH_TIME_ENV}={os.environ[LAUNCH_TIME_ENV]!r} is not epoch seconds "
                "(e.g. export VLAEXP_LAUNCH_TIME=$(date +%s))"
            ) from None
    if _external_world_size() > 1:
        if _external_nodes() > 1:
            raise ConfigError(
                "A multi-node launch needs one run dir name on every node: export "
                f"{LAUNCH_TIME_ENV}=$(date +%s) before torchrun/srun, or set hydra.run.dir"
            )
        return _process_start_time(os.getppid())
    return time.time()


_LAUNCH: float | None = None


def launch_strftime(pattern: str) -> str:
    """The ``launch`` resolver: ``${launch:%Y-%m-%d}`` formats :func:`launch_time`."""
    global _LAUNCH
    if _LAUNCH is None:
        _LAUNCH = launch_time()
    return datetime.fromtimestamp(_LAUNCH).strftime(pattern)


def spawns_processes(trainer_cfg) -> bool:
    """Whether Lightning itself would start more processes for this trainer config
    (a multi-device strategy with no torchrun/SLURM ranks around it)."""
    if _external_world_size() > 1 or "LOCAL_RANK" in os.environ:
        return False
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    strategy = trainer_cfg.get("strategy", "auto")
    name = strategy if isinstance(strategy, str) else str(strategy.get("_target_", ""))
    multi = devices not in (1, "1", [0]) or int(nodes or 1) > 1
    return multi and any(s in name.lower() for s in ("ddp", "fsdp", "deepspeed"))


def check_not_in_local_sweep(trainer_cfg, launcher_target: str | None) -> None:
    """A multi-process Trainer inside a local ``-m`` sweep would re-launch the sweep's own
    command line from every job (Lightning's subprocess launcher): refuse it up front."""
    local = launcher_target is not None and any(
        n in launcher_target for n in ("BasicLauncher", "JoblibLauncher")
    )
    if local and spawns_processes(trainer_cfg):
        raise ConfigError(
            f"trainer.strategy={trainer_cfg.get('strategy')} with trainer.devices="
            f"{trainer_cfg.get('devices')} cannot run inside a local multirun (-m with the "
            "basic or joblib launcher). Sweep multi-GPU runs with hydra/launcher="
            "submitit_slurm, or run them one at a time without -m."
        )
