"""Data-parallel runs from the entry point, rank-safe run dirs, and the sweep launchers."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_vlaexp
from vlaexp.errors import ConfigError
from vlaexp.training import distributed

# trainer=ddp on two CPU processes (gloo): no GPU, no SyncBatchNorm (CUDA only), fp32
CPU_DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.sync_batchnorm=false",
    "trainer.benchmark=false",
]


def _train_losses(run: Path) -> list[float]:
    (metrics,) = run.glob("**/metrics.csv")
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def _weights(run: Path, step: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / step / "pretrained_model" / "model.safetensors")


def test_ddp_on_two_processes_matches_one_process_with_the_same_global_batch(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """Two gloo ranks x 4 samples vs one process x 8 samples (the datamodule deals one
    seeded order to the ranks): same losses and weights after 3 steps. A LayerNorm backbone
    (BatchNorm statistics depend on the per-device batch), chunk_size 1 (no padded steps,
    so every rank's mean loss weighs the same) and AdamW with eps=1 (updates proportional
    to the gradient, not its sign, so rounding noise stays rounding noise)."""
    common = [
        *tiny_overrides,
        "logger=csv",
        "trainer.max_steps=3",
        "callbacks.step_checkpoint.save_freq=1",
        "policy.vision_backbone=convnext_atto",
        "policy.chunk_size=1",
        "policy.n_action_steps=1",
        "policy.optimizer.lr=0.05",
        "policy.optimizer.eps=1.0",
        "policy.optimizer.weight_decay=0",
        "policy.scheduler.warmup_steps=0",
        "stages=[train,report]",
    ]
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    ddp = run_vlaexp(
        [
            *common,
            *CPU_DDP,
            "data.batch_size=4",
            f"hydra.run.dir={ddp_run}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    single = run_vlaexp(
        [*common, "data.batch_size=8", f"hydra.run.dir={single_run}"], cwd=tmp_path, timeout=600
    )
    assert single.returncode == 0, single.stderr[-4000:]

    # one run dir, claimed once; rank 1 ran `train` but left `report` to rank 0
    assert len(json.loads((ddp_run / "run.json").read_text())["launches"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]
    assert "Stage report: rank 0 runs it, rank 1 is done" in ddp.stdout + ddp.stderr
    assert json.loads((ddp_run / "job_status.json").read_text())["status"] == "completed"

    losses_ddp, losses_single = _train_losses(ddp_run), _train_losses(single_run)
    assert len(losses_ddp) == len(losses_single) == 3
    torch.testing.assert_close(losses_ddp, losses_single, rtol=1e-4, atol=1e-6)
    for step in ("000001", "000003"):
        w_ddp, w_single = _weights(ddp_run, step), _weights(single_run, step)
        assert w_ddp.keys() == w_single.keys()
        for name, value in w_single.items():
            torch.testing.assert_close(w_ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # the steps did change the weights, so matching them means something
    first, last = _weights(single_run, "000001"), _weights(single_run, "000003")
    assert max((last[k] - first[k]).abs().max().item() for k in first if "head" in k) > 1e-3


def test_torchrun_ranks_share_one_run_dir_named_at_launch(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """Each torchrun rank composes its own config; the run dir's time is the launcher's
    start, so ranks that start seconds apart still name the same one."""
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    env.pop(distributed.LAUNCH_TIME_ENV, None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "-m",
            "vlaexp",
            *tiny_overrides,
            "logger=csv",
            "trainer.max_steps=1",
            "data.batch_size=4",
            "stages=[train,report]",
            *CPU_DDP,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (run,) = (tmp_path / "outputs" / "adhoc").glob("*/*")  # one dir for both ranks
    launches = json.loads((run / "run.json").read_text())["launches"]
    assert len(launches) == 1
    assert (run / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").exists()
    assert "Stage report: rank 0 runs it, rank 1 is done" in out.stdout + out.stderr


def test_a_sweep_runs_through_submitits_local_executor(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """The submitit plugin pickles each job with its config and runs it in a new process
    (as on SLURM, minus sbatch); the jobs and the sweep summary come back."""
    out = run_vlaexp(
        [
            "-m",
            *tiny_overrides,
            "logger=csv",
            "trainer.max_steps=1",
            "hydra/launcher=submitit_local",
            "seed=0,1",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    (sweep,) = (tmp_path / "outputs" / "adhoc" / "multirun").iterdir()
    assert "2/2 jobs completed" in (sweep / "sweep_summary.txt").read_text()
    assert (sweep / ".submitit").is_dir()
    for job in ("0_tabletop_spatial_bc", "1_tabletop_spatial_bc"):
        assert json.loads((sweep / job / "job_status.json").read_text())["status"] == "completed"


def test_a_multi_process_trainer_inside_a_local_sweep_is_refused(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    out = run_vlaexp(
        ["-m", *tiny_overrides, "trainer=ddp", "trainer.devices=2", "seed=0,1"], cwd=tmp_path
    )
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "cannot run inside a local multirun" in text and "submitit_slurm" in text
    assert not list(tmp_path.glob("outputs/**/checkpoints"))


def test_launch_time_is_shared_by_the_ranks_of_one_launch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("TORCHELASTIC_RUN_ID", "GROUP_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(distributed.LAUNCH_TIME_ENV, "1700000000")
    assert distributed.launch_time() == 1700000000.0
    monkeypatch.setenv(distributed.LAUNCH_TIME_ENV, "yesterday")
    with pytest.raises(ConfigError, match="epoch seconds"):
        distributed.launch_time()
    monkeypatch.delenv(distributed.LAUNCH_TIME_ENV)

    # torchrun on one node: every rank is a child of the same agent -> its start time
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    agent = distributed._process_start_time(os.getppid())
    assert distributed.launch_time() == agent
    assert distributed._process_start_time(os.getpid()) >= agent  # a child starts later
    # two nodes: nothing local is common to both, so the user must say
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="VLAEXP_LAUNCH_TIME"):
        distributed.launch_time()


def test_only_rank_zero_claims_the_run_dir_and_a_requeued_job_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from vlaexp.pipeline.rundir import LAST_CHECKPOINT, MARKER, claim_run_dir

    run = tmp_path / "run"
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert claim_run_dir(run, resume=False) is None
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run_dir(run, resume=False)

    monkeypatch.setattr(rank_zero_only, "rank", 1)  # rank 1 of the same launch
    assert claim_run_dir(run, resume=False) is None
    assert len(json.loads((run / MARKER).read_text())["launches"]) == 1
    monkeypatch.setattr(rank_zero_only, "rank", 0)

    # SLURM requeued the job after a timeout: resume from checkpoints/last
    ckpt = run / "checkpoints" / "000010"
    ckpt.mkdir(parents=True)
    (run / LAST_CHECKPOINT).symlink_to("000010")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert claim_run_dir(run, resume=False) == ckpt.resolve()
    launches = json.loads((run / MARKER).read_text())["launches"]
    assert launches[-1]["restart"] == 1 and launches[-1]["resume_from"] == str(ckpt.resolve())


def test_fsdp_preset_wraps_the_blocks_the_policy_names(tmp_path: Path) -> None:
    from transformers.models.gemma.modeling_gemma import GemmaMLP

    from vlaexp.config.compose import resolved_run_config
    from vlaexp.policies.pi0.policy import Pi0Policy
    from vlaexp.training.strategies import FSDPStrategy
    from vlaexp.training.trainer import _strategy

    cfg = resolved_run_config(
        ["policy=pi05_tiny", "trainer=fsdp", f"paths.root_dir={tmp_path}"], tmp_path / "run"
    )
    strategy = _strategy(cfg.trainer, Pi0Policy.fsdp_blocks)
    assert isinstance(strategy, FSDPStrategy)
    assert GemmaMLP in strategy.kwargs["auto_wrap_policy"]._module_classes
    assert strategy._state_dict_type == "full"  # consolidated: loads on one device
    ddp = resolved_run_config(["trainer=ddp", f"paths.root_dir={tmp_path}"], tmp_path / "r2")
    assert _strategy(ddp.trainer, Pi0Policy.fsdp_blocks)._ddp_kwargs["gradient_as_bucket_view"]


def _fake_slurm(bin_dir: Path, copy_to: Path) -> None:
    """An ``sbatch`` that keeps the script it is given and answers as SLURM does (and the
    ``srun`` whose presence submitit checks)."""
    bin_dir.mkdir()
    for name, body in (
        ("sbatch", f'cp "$1" {copy_to}\necho "Submitted batch job 4242"'),
        ("srun", "exit 1"),
    ):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_submitit_slurm_preset_renders_an_sbatch_script_with_requeue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The launcher config composes, and the plugin's own launch() turns it into the
    sbatch script SLURM would get (``sbatch`` is a stand-in that records it)."""
    import submitit
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from vlaexp.config.store import register_configs

    rendered = tmp_path / "job.sh"
    _fake_slurm(tmp_path / "bin", rendered)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda self: ["done"])
    register_configs()
    with initialize_config_module("vlaexp.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=2",
                "hydra.launcher.timeout_min=90",
                "trainer=ddp",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
                f"paths.root_dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == ["done", "done"]
    text = rendered.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",  # one rank per GPU, started by srun
        "#SBATCH --nodes=1",
        "#SBATCH --time=90",
        "#SBATCH --signal=USR2@120",  # submitit's timeout signal -> checkpoint() -> requeue
        "#SBATCH --array=0-1%2",  # both sweep points, as one array
    ):
        assert line in text, f"{line} missing from\n{text}"
    assert "srun" in text and "submitit.core._submit" in text
    assert launcher.params["max_num_timeout"] == 5  # requeues after a timeout
    resubmission = launcher.checkpoint(["seed=0"], "hydra.sweep.dir", 0, "id", {})
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
