"""The entry point as users run it: help, errors, sweeps, run dirs and resume (subprocesses)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run_vlaexp

REPO = Path(__file__).resolve().parents[1]


vlaexp = run_vlaexp


def wandb_run_record(run_dir: Path):
    """The run record (group, tags, name) wandb wrote for an offline run in ``run_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    while (data := store.scan_data()) is not None:
        record = pb.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {path}")


def test_help_lists_groups_and_experiments(tmp_path: Path) -> None:
    out = vlaexp(["--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    for name in experiments:
        assert f"  {name}" in out.stdout
    for group in (
        "policy:",
        "task_suite:",
        "camera:",
        "tokenizer:",
        "trainer:",
        "logger:",
        "callbacks:",
        "debug:",
        "hydra/launcher:",
    ):
        assert group in out.stdout
    assert "cpu, ddp, default, fsdp, gpu" in out.stdout


def test_bad_input_exits_2_with_a_suggestion(tmp_path: Path) -> None:
    out = vlaexp(["+experiment=quickstrt"], cwd=tmp_path)
    assert out.returncode == 2
    assert "Unknown experiment 'quickstrt'. Did you mean 'quickstart'?" in out.stderr
    out = vlaexp(["+experiment=quickstart", "trainer.max_step=3"], cwd=tmp_path)
    assert out.returncode == 2 and "Did you mean 'trainer.max_steps'" in out.stderr
    assert not (tmp_path / "outputs").exists()  # nothing started


def test_multirun_over_a_group_shares_one_wandb_group(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    out = vlaexp(
        ["-m", *tiny_overrides, "camera=agentview,wrist", "trainer.max_steps=2", "name=sweeptest"],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "outputs" / "sweeptest" / "multirun").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0_tabletop_spatial_bc", "1_tabletop_spatial_bc"]
    records = [wandb_run_record(j) for j in jobs]
    assert records[0].run_group == records[1].run_group == f"sweeptest/{sweep_dir.name}"
    assert "camera:agentview" in records[0].tags and "camera:wrist" in records[1].tags
    assert all("policy:bc" in r.tags and "seed:0" in r.tags for r in records)
    for job in jobs:
        assert json.loads((job / "job_status.json").read_text())["status"] == "completed"
        assert (job / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    assert "2/2 jobs completed" in (sweep_dir / "sweep_summary.txt").read_text()


def test_a_failing_job_does_not_stop_the_sweep(tiny_overrides: list[str], tmp_path: Path) -> None:
    out = vlaexp(
        [
            "-m",
            *tiny_overrides,
            "logger=csv",
            "camera=wrist,agentview",
            "trainer.max_steps=1",
            "data.camera_keys.wrist=observation.images.missing",
            "name=failtest",
        ],
        cwd=tmp_path,
    )
    assert out.returncode != 0
    (sweep_dir,) = (tmp_path / "outputs" / "failtest" / "multirun").iterdir()
    failed = json.loads((sweep_dir / "0_tabletop_spatial_bc" / "job_status.json").read_text())
    assert failed["status"] == "failed" and "observation.images.missing" in failed["error"]
    assert failed["config"].endswith(".hydra/config.yaml")
    ok = json.loads((sweep_dir / "1_tabletop_spatial_bc" / "job_status.json").read_text())
    assert ok["status"] == "completed"
    summary = (sweep_dir / "sweep_summary.txt").read_text()
    assert "1/2 jobs completed" in summary and "FAILED  0_tabletop_spatial_bc" in summary
    assert "1 sweep job(s) failed: 0_tabletop_spatial_bc" in out.stderr


def test_run_dir_is_never_overwritten_and_resume_continues(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    run = tmp_path / "myrun"
    common = [
        *tiny_overrides,
        "logger=csv",
        f"hydra.run.dir={run}",
        "callbacks.step_checkpoint.save_freq=2",
    ]
    first = vlaexp([*common, "trainer.max_steps=4"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert os.readlink(run / "checkpoints" / "last") == "000004"

    again = vlaexp([*common, "trainer.max_steps=4"], cwd=tmp_path)
    assert again.returncode != 0 and "already holds a run" in again.stderr + again.stdout

    resumed = vlaexp([*common, "trainer.max_steps=6", "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert os.readlink(run / "checkpoints" / "last") == "000006"
    launches = json.loads((run / "run.json").read_text())["launches"]
    assert len(launches) == 2 and launches[1]["resume_from"].endswith("000004")
    state = run / "checkpoints" / "000006" / "training_state"
    assert json.loads((state / "training_step.json").read_text())["step"] == 6
    from safetensors.torch import load_file

    adam_steps = {
        float(v)
        for k, v in load_file(state / "optimizer_state.safetensors").items()
        if k.endswith(".step")
    }
    assert adam_steps == {6.0}
    assert json.loads((state / "scheduler_state.json").read_text())[0]["last_epoch"] == 6


def test_resume_without_a_checkpoint_names_the_setting(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    out = vlaexp(
        [*tiny_overrides, "logger=csv", f"hydra.run.dir={tmp_path}/empty", "resume=true"],
        cwd=tmp_path,
    )
    assert out.returncode != 0
    text = out.stderr + out.stdout
    assert f"{tmp_path}/empty/checkpoints/last" in text and "hydra.run.dir" in text


@pytest.mark.parametrize("flag", ["--cfg job"])
def test_cfg_prints_composed_config(flag: str, tmp_path: Path) -> None:
    out = vlaexp(["+experiment=quickstart", *flag.split()], cwd=tmp_path)
    assert out.returncode == 0 and "name: quickstart" in out.stdout
