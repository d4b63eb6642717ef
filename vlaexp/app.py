"""The entry point: ``python -m vlaexp +experiment=NAME [overrides]`` (or ``vlaexp ...``).

It checks the command line (clear errors before Hydra starts), composes the config,
claims the run dir, prints and saves the resolved config tree on rank 0, and runs the
experiment's stages in order. Under data parallel training every rank runs this: all ranks
collect (the cache builds once, under a lock) and train; the other stages run on rank 0.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig, OmegaConf

from vlaexp.config.compose import (
    USER_GROUPS,
    check_overrides,
    experiment_descriptions,
    group_options,
    normalize_overrides,
)
from vlaexp.config.store import register_configs
from vlaexp.errors import ConfigError, VlaexpError
from vlaexp.pipeline.job import SweepSummary, in_multirun, task_wrapper
from vlaexp.pipeline.registry import ALL_RANK_STAGES, STAGES, get_stage, validate_stages
from vlaexp.training.distributed import check_not_in_local_sweep, global_rank

__all__ = ["SweepSummary", "main", "run_experiment"]

log = logging.getLogger("vlaexp")

USAGE = """\
vlaexp: Hydra-configured experiments for Vision-Language-Action robot policies.

Usage:
  python -m vlaexp +experiment=NAME [group=option ...] [key=value ...]
  python -m vlaexp -m +experiment=NAME policy=bc,pi0_tiny seed=0,1     # a sweep
  python -m vlaexp +experiment=NAME hydra.run.dir=<run dir> resume=true  # continue a run

Inspect without running: add `--cfg job` (composed config) or `--cfg job --resolve`.
Hydra's own flags: `--hydra-help`.
"""


def print_help() -> None:
    lines = [USAGE, "Experiments (+experiment=NAME):"]
    descriptions = experiment_descriptions()
    width = max((len(n) for n in descriptions), default=0)
    lines += [f"  {name:<{width}}  {desc}" for name, desc in descriptions.items()]
    lines += ["", "Config groups (group=option):"]
    for group in USER_GROUPS:
        if group == "experiment":
            continue
        lines.append(f"  {group}: {', '.join(group_options(group))}")
    lines += ["", f"Stages (stages=[...]): {', '.join(STAGES)}"]
    print("\n".join(lines))


def save_config_tree(cfg: DictConfig, run_dir: Path, print_tree: bool) -> None:
    """Print the resolved config as a rich tree and save it (and plain YAML) in the run dir."""
    import rich
    import rich.syntax
    import rich.tree

    if global_rank() != 0:
        return
    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key), style="bold cyan")
        text = OmegaConf.to_yaml(value) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    with open(run_dir / "config_tree.log", "w") as f:
        rich.print(tree, file=f)
    if print_tree:
        rich.print(tree)


@task_wrapper
def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run the experiment described by ``cfg``; return its metrics."""
    from vlaexp.pipeline.rundir import claim_run_dir

    OmegaConf.resolve(cfg)  # once: every stage sees the same values
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"Missing required value(s): {', '.join(missing)}. Set them on the command line, "
            f"e.g. {missing[0]}=..."
        )
    validate_stages(cfg.stages)
    check_not_in_local_sweep(cfg.trainer, _launcher_target())
    run_dir = Path(cfg.paths.output_dir)
    resume_from = claim_run_dir(run_dir, resume=cfg.resume)  # before the slow imports below

    import lightning.pytorch as pl

    from vlaexp.pipeline.context import RunContext

    save_config_tree(cfg, run_dir, cfg.print_config)
    pl.seed_everything(cfg.seed, workers=True)
    ctx = RunContext(cfg=cfg, run_dir=run_dir)
    if resume_from is not None:
        ctx.artifacts["resume_from"] = resume_from
    rank = global_rank()
    for name in cfg.stages:
        if rank != 0 and name not in ALL_RANK_STAGES:
            log.info("Stage %s: rank 0 runs it, rank %d is done", name, rank)
            continue
        log.info("Stage %s", name)
        get_stage(name)(ctx)
    log.info("Done: %s", run_dir)
    return ctx.metrics


def _launcher_target() -> str | None:
    """The multirun launcher's class path (None outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig

    if not in_multirun():
        return None
    return str(HydraConfig.get().launcher.get("_target_", ""))


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://vlaexp.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    return run_experiment(cfg)


def main() -> None:
    # conf/hydra/launcher/{submitit_slurm,joblib}.yaml are the plugins' configs with our
    # defaults, under the names users know; Hydra still matches them to the plugins' schemas
    # (which is what we want) but warns that this matching is deprecated.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against")
    args = get_args_parser().parse_args(sys.argv[1:])
    if args.help:
        print_help()
        return
    hydra_only = args.hydra_help or args.info or args.shell_completion or args.experimental_rerun
    overrides = normalize_overrides(args.overrides)
    sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a not in args.overrides], *overrides]
    if not hydra_only:
        try:
            check_overrides(overrides)
        except VlaexpError as e:
            print(f"vlaexp: error: {e}", file=sys.stderr)
            sys.exit(2)
    _hydra_main()
    if SweepSummary.failed:
        names = ", ".join(SweepSummary.failed)
        print(
            f"vlaexp: error: {len(SweepSummary.failed)} sweep job(s) failed: {names}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
