"""Pipeline stages end to end: the artifact cache, collect, the sim-eval callback, quickstart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers import run_vlaexp
from vlaexp.pipeline.cache import COMPLETE, cached_artifact


def test_cached_artifact_builds_once_per_spec_and_never_keeps_a_crashed_build(
    tmp_path: Path,
) -> None:
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        out.mkdir()
        (out / "data.txt").write_text("x")
        return {"n": 1}

    a = cached_artifact(tmp_path, "things", {"k": 1}, build, label="a")
    b = cached_artifact(tmp_path, "things", {"k": 1}, build, label="a")
    c = cached_artifact(tmp_path, "things", {"k": 2}, build, label="a")
    assert a == b != c and len(calls) == 2
    assert (a / COMPLETE).exists() and json.loads((a / "artifact_spec.json").read_text())[
        "spec"
    ] == {"k": 1}

    def crash(out: Path) -> None:
        out.mkdir()
        raise RuntimeError("simulator died")

    with pytest.raises(RuntimeError):
        cached_artifact(tmp_path, "things", {"k": 3}, crash)
    assert not any(
        p.name.endswith(COMPLETE) for p in (tmp_path / "things").rglob("*") if "k" in p.name
    )
    d = cached_artifact(tmp_path, "things", {"k": 3}, build)
    assert (d / "data.txt").exists() and len(calls) == 3


def test_a_job_that_waited_for_another_jobs_build_reuses_it_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs launched together on one recording: one builds it, the others wait on its lock,
    then log the reuse (the device scripts find a job's dataset by that line)."""
    import logging
    import threading
    import time

    from filelock import FileLock

    from vlaexp.pipeline.cache import spec_hash

    final = tmp_path / "things" / f"a-{spec_hash({'k': 1})}"
    final.parent.mkdir(parents=True)
    built = []
    lock = FileLock(str(final) + ".lock")
    lock.acquire()  # the other job, building
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            path=cached_artifact(tmp_path, "things", {"k": 1}, built.append, label="a")
        )
    )
    with caplog.at_level(logging.INFO, logger="vlaexp.pipeline.cache"):
        waiter.start()
        time.sleep(0.5)  # it found no artifact and waits on the lock
        assert waiter.is_alive()
        final.mkdir()
        (final / COMPLETE).touch()
        lock.release()
        waiter.join(timeout=30)
    assert result["path"] == final and built == []
    assert f"Reusing cached things {final}" in caplog.text


@pytest.fixture(scope="session")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Two tasks x 2 expert demos of tabletop_spatial at 64x64, recorded as the collect stage does."""
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.sim.factory import make_task_suite

    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=64"]).task_suite
    suite = make_task_suite(OmegaConf.create(OmegaConf.to_container(cfg)), ["agentview", "wrist"])
    root = tmp_path_factory.mktemp("collect") / "spatial"
    summary = collect_demonstrations(
        suite, root, "test/spatial", ["agentview", "wrist"], 2, task_ids=[0, 1]
    )
    return root, summary


def test_collected_demos_round_trip_with_features_stats_and_flags(
    collected: tuple[Path, dict],
) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.episodes import read_episode_records

    root, summary = collected
    assert summary["episodes"] == 4 and summary["successes"] == 4
    ds = LeRobotDataset("test/spatial", root=root, video_backend="pyav")
    assert ds.meta.features["observation.images.agentview"]["dtype"] == "video"
    assert ds.meta.features["observation.images.wrist"]["shape"] == [64, 64, 3] or ds.meta.features[
        "observation.images.wrist"
    ]["shape"] == (64, 64, 3)
    stats = ds.meta.stats["action"]
    assert {"mean", "std", "q01", "q99"} <= set(stats)
    assert (stats["q01"] <= stats["q99"]).all() and stats["max"][6] == 1.0  # the gripper closes
    records = read_episode_records(root)
    assert [r["task_id"] for r in records] == [0, 0, 1, 1]
    assert all(r["success"] and r["failure_mode"] is None for r in records)
    assert len({r["seed"] for r in records}) == 4


def test_collect_in_worker_processes_writes_the_same_dataset_as_in_process(
    tmp_path: Path,
) -> None:
    """data.collect.n_workers only changes how fast demos are recorded, never what is recorded."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.data.episodes import read_episode_records
    from vlaexp.sim.workers import SuiteSpec

    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"]).task_suite
    cams = ["agentview", "wrist"]
    roots = {}
    for n in (1, 2):
        spec = SuiteSpec(OmegaConf.to_container(cfg, resolve=True), cams)
        roots[n] = tmp_path / f"w{n}"
        summary = collect_demonstrations(
            spec, roots[n], "test/w", cams, 3, task_ids=[0, 1], use_videos=False, n_workers=n
        )
        assert summary["episodes"] == 6
    a, b = (LeRobotDataset("test/w", root=roots[n]) for n in (1, 2))
    assert len(a) == len(b) > 6 * 20
    for key in ("action", "observation.state", "episode_index", "task_index"):
        np.testing.assert_array_equal(np.stack(a.hf_dataset[key]), np.stack(b.hf_dataset[key]))
    for i in (0, len(a) // 2, len(a) - 1):
        for cam in cams:
            k = f"observation.images.{cam}"
            assert (a[i][k] == b[i][k]).all()
    ra, rb = (read_episode_records(roots[n]) for n in (1, 2))
    assert [r["seed"] for r in ra] == [r["seed"] for r in rb]
    assert [r["task_id"] for r in rb] == [0, 0, 0, 1, 1, 1]

    # DART demos (action_noise): the same seeds, the env pushed off the expert's path while
    # the dataset keeps the expert's corrective actions: the TCP no longer moves by the
    # recorded action (it does, to within tracking, in the plain demos)
    from vlaexp.sim.tabletop.env import POS_SCALE

    spec = SuiteSpec(OmegaConf.to_container(cfg, resolve=True), cams)
    summary = collect_demonstrations(
        spec,
        tmp_path / "dart",
        "test/w",
        cams,
        3,
        task_ids=[0, 1],
        use_videos=False,
        n_workers=2,
        action_noise=0.1,
    )
    assert summary["successes"] == 6
    dart = LeRobotDataset("test/w", root=tmp_path / "dart")
    assert [r["seed"] for r in read_episode_records(tmp_path / "dart")] == [r["seed"] for r in ra]

    def tracking_error(ds: LeRobotDataset) -> float:
        state = np.stack(ds.hf_dataset["observation.state"])[:, :3]
        action = np.stack(ds.hf_dataset["action"])[:, :3]
        same_ep = np.diff(np.stack(ds.hf_dataset["episode_index"])) == 0
        moved = np.diff(state, axis=0)[same_ep] - action[:-1][same_ep] * POS_SCALE
        return float(np.median(np.abs(moved)))

    assert tracking_error(a) < 1e-3 < 2e-3 < tracking_error(dart)
    # a phase the expert does not have is an error, not a dataset silently without noise
    with pytest.raises(ValueError, match=r"\['carrry'\] are not phases.*'lower'"):
        collect_demonstrations(
            spec,
            tmp_path / "typo",
            "test/w",
            cams,
            1,
            task_ids=[0],
            use_videos=False,
            action_noise=0.1,
            action_noise_phases=["approach", "carrry"],
        )
    with pytest.raises(ValueError, match="SuiteSpec"):
        from vlaexp.sim.factory import make_task_suite

        suite = make_task_suite(OmegaConf.to_container(cfg, resolve=True), cams)
        collect_demonstrations(suite, tmp_path / "x", "test/x", cams, 1, n_workers=2)


def test_background_writer_keeps_order_and_never_loses_a_failure() -> None:
    """The recording's writer thread: writes in submission order, holds at most max_pending
    waiting, and a failed write is raised in the caller's thread (at the next submit or at
    close), with nothing written after it."""
    import threading

    from vlaexp.data.collect import BackgroundWriter

    started, gate, written = threading.Event(), threading.Event(), []

    def write(i: int, tag: str = "") -> None:
        started.set()
        gate.wait()
        if i == 3:
            raise OSError("disk full")
        written.append((i, tag))

    writer = BackgroundWriter(write, max_pending=2)
    writer.submit(0, tag="a")
    assert started.wait(timeout=5)  # taken by the thread, which waits at the gate
    writer.submit(1)
    writer.submit(2)  # the queue is full now (2 waiting)
    blocked = threading.Thread(target=writer.submit, args=(3,))
    blocked.start()
    blocked.join(timeout=0.3)
    assert blocked.is_alive()  # a third waiting submission blocks until the thread takes one
    gate.set()
    blocked.join(timeout=5)
    assert not blocked.is_alive()
    with pytest.raises(RuntimeError, match=r"writing an episode failed: OSError\('disk full'\)"):
        for i in range(4, 1000):  # the failure reaches the caller (queue bounded at 2)
            writer.submit(i)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.close()
    assert written == [(0, "a"), (1, ""), (2, "")]  # in order, and nothing after the failure
    in_line = BackgroundWriter(lambda i: written.append((i, "in line")), max_pending=0)
    in_line.submit(7)
    assert written[-1] == (7, "in line")  # written at once, in this thread
    in_line.close()
    del written[-1]
    ok = BackgroundWriter(lambda i: written.append((i, "ok")), max_pending=1)
    for i in range(5):
        ok.submit(i)
    ok.close()
    ok.close()  # closing twice is harmless
    assert written[3:] == [(i, "ok") for i in range(5)]


def test_recording_in_the_background_writes_what_writing_in_line_does(tmp_path: Path) -> None:
    """The writer thread and LeRobot's image threads change when frames are written, not
    what: every column (the PNG bytes too) and the episode records are those of writing each
    episode in line, one frame after another (``background_writing=False``)."""
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.sim.factory import make_task_suite

    cams = ["agentview", "wrist"]
    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"]).task_suite

    def record(name: str, background: bool) -> Path:
        suite = make_task_suite(OmegaConf.to_container(cfg, resolve=True), cams)
        collect_demonstrations(
            suite, tmp_path / name, "test/bg", cams, 2, task_ids=[0, 1], use_videos=False,
            background_writing=background,
        )  # fmt: skip
        return tmp_path / name

    background, in_line = record("background", True), record("in_line", False)
    (a,), (b,) = (sorted((root / "data").rglob("*.parquet")) for root in (background, in_line))
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.num_rows == tb.num_rows > 4 * 20 and ta.schema.names == tb.schema.names
    for name in ta.schema.names:  # images are stored as PNG bytes in the parquet file
        assert ta[name].equals(tb[name]), name
    for f in ("meta/vlaexp_episodes.jsonl", "meta/stats.json", "meta/info.json"):
        assert (background / f).read_text() == (in_line / f).read_text(), f


def test_recording_in_shares_writes_what_one_process_does(tmp_path: Path) -> None:
    """data.collect.writers: the episodes recorded in three processes (shares of 2, 1 and 1
    episodes, the second task split between two) and merged give every column (the PNG bytes
    too), episode index, task and record of one process's recording, and the statistics of
    every observation, action and reward to rounding."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.sim.workers import SuiteSpec

    cams = ["agentview", "wrist"]
    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"]).task_suite
    spec = SuiteSpec(OmegaConf.to_container(cfg, resolve=True), cams)
    summaries = {}
    for w in (1, 3):
        summaries[w] = collect_demonstrations(
            spec, tmp_path / f"w{w}", "test/shares", cams, 2, task_ids=[0, 1],
            use_videos=False, n_workers=w, writers=w,
        )  # fmt: skip
    assert summaries[1] == summaries[3] and summaries[3]["episodes"] == 4
    one, shares = tmp_path / "w1", tmp_path / "w3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1", "w3"]  # no share left behind

    def table(root: Path, sub: str) -> pa.Table:
        return pa.concat_tables(pq.read_table(f) for f in sorted((root / sub).rglob("*.parquet")))

    ta, tb = table(one, "data"), table(shares, "data")
    assert ta.num_rows == tb.num_rows > 4 * 20 and ta.schema.names == tb.schema.names
    for name in ta.schema.names:
        assert ta[name].equals(tb[name]), name
    tasks = "meta/tasks.parquet"
    assert pq.read_table(one / tasks).equals(pq.read_table(shares / tasks))
    ea, eb = table(one, "meta/episodes"), table(shares, "meta/episodes")
    for name in ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"):
        assert ea[name].equals(eb[name]), name
    sidecar = "meta/vlaexp_episodes.jsonl"
    assert (one / sidecar).read_text() == (shares / sidecar).read_text()
    ia, ib = (json.loads((r / "meta/info.json").read_text()) for r in (one, shares))
    for key in ("total_episodes", "total_frames", "total_tasks", "features", "fps"):
        assert ia[key] == ib[key], key
    sa, sb = (json.loads((r / "meta/stats.json").read_text()) for r in (one, shares))
    assert sa.keys() == sb.keys()
    # LeRobot's aggregate keeps each share's statistics of its bookkeeping columns (indices
    # counted within the share); those of every observation, action and reward are the same
    bookkeeping = {"index", "episode_index", "task_index"}
    for feature in sa.keys() - bookkeeping:
        for stat in sa[feature]:
            np.testing.assert_allclose(
                sa[feature][stat], sb[feature][stat], rtol=1e-6, atol=1e-9, err_msg=feature
            )
    assert {"observation.images.wrist", "action", "next.success"} <= sa.keys() - bookkeeping
    with pytest.raises(ValueError, match="writers must be >= 1"):
        collect_demonstrations(spec, tmp_path / "x", "test/x", cams, 1, writers=0)
    # bad settings are reported here, before any share starts, and nothing is left behind
    with pytest.raises(ValueError, match=r"\['carrry'\] are not phases"):
        collect_demonstrations(
            spec, tmp_path / "x", "test/x", cams, 1, writers=2, action_noise=0.1,
            action_noise_phases=["carrry"],
        )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1", "w3"]


def test_sim_eval_callback_in_a_short_training_run(
    collected: tuple[Path, dict], tmp_path: Path
) -> None:
    import torch

    from vlaexp.config.compose import resolved_run_config
    from vlaexp.data.datamodule import datamodule_from_config
    from vlaexp.policies.factory import make_policy
    from vlaexp.training.loggers import build_loggers
    from vlaexp.training.trainer import build_trainer

    root, _ = collected
    run = tmp_path / "run"
    cfg = resolved_run_config(
        [
            "data=lerobot",
            f"data.root={root}",
            "data.repo_id=test/spatial",
            "data.camera_keys.agentview=observation.images.agentview",
            "data.camera_keys.wrist=observation.images.wrist",
            "data.num_workers=0",
            "data.batch_size=8",
            "data.split=[1.0,0.0,0.0]",
            "trainer=cpu",
            "trainer.max_steps=4",
            "trainer.enable_progress_bar=false",
            "policy.image_size=32",
            "policy.hidden_dim=32",
            "logger=csv",
            "callbacks=sim_eval",
            "callbacks.sim_eval.every_n_steps=2",
            "eval.n_episodes=1",
            "eval.task_ids=[0]",
            "eval.max_steps=15",
            "task_suite.resolution=64",
            "callbacks.step_checkpoint.save_freq=100",
        ],
        run,
    )
    torch.manual_seed(0)
    dm = datamodule_from_config(cfg.data, cfg.policy)
    dm.setup("fit")
    policy = make_policy(cfg.policy, dataset_stats=dm.stats)
    trainer = build_trainer(cfg, build_loggers(cfg))
    trainer.fit(policy, datamodule=dm)
    for step in ("000002", "000004"):
        info = json.loads((run / "sim_eval" / f"step_{step}" / "eval_info.json").read_text())
        assert len(info["per_episode"]) == 1 and info["per_episode"][0]["steps"] == 15
    assert (run / "checkpoints" / "best" / "pretrained_model" / "model.safetensors").is_file()
    assert (
        json.loads((run / "checkpoints" / "best.json").read_text())["step"] == 2
    )  # ties keep the first
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").read_text().splitlines()))
    assert [r["step"] for r in rows if r.get("eval/pc_success")] == ["2", "4"]


@pytest.mark.slow  # ~90 s on 2 cores; make test-full (and make demo) run it
def test_quickstart_runs_end_to_end_in_limit_mode(tmp_path: Path) -> None:
    out = run_vlaexp(
        [
            "+experiment=quickstart",
            "debug=limit",
            "logger=csv",
            "data.collect.task_ids=[0,1]",
            "eval.task_ids=[0]",
            "eval.n_episodes=1",
            "eval.max_steps=30",
            "task_suite.resolution=64",
            "policy.image_size=48",
            "rnd.train.max_steps=5",
            "print_config=false",
            f"paths.root_dir={tmp_path}",
            "hydra.run.dir=" + str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["collect/episodes"] == 4.0
    assert summary["metrics"]["train/global_step"] == 6.0
    assert "eval/pc_success" in summary["metrics"] and "val/loss" in summary["metrics"]
    assert (
        Path(summary["artifacts"]["dataset"]).parent == tmp_path / "outputs" / "cache" / "datasets"
    )
    info = json.loads((tmp_path / "run" / "eval" / "eval_info.json").read_text())
    assert len(info["per_episode"]) == 1 and len(info["video_paths"]) == 1
    # the RND steps: agentview tokens of the demos, a briefly trained RND, scored rollouts of
    # tasks 0 and 1, the timeline and overlays of one episode
    assert "rnd/agentview/val_loss" in summary["metrics"]
    scores = sorted((tmp_path / "run" / "uncertainty").glob("*/episode_*_uncertainty.pt"))
    assert [p.parent.name for p in scores] == ["tabletop_spatial_0", "tabletop_spatial_1"]
    shown = tmp_path / "run" / "uncertainty" / "verification" / "tabletop_spatial_0_episode_00000"
    assert (shown / "uncertainty_timeline.png").is_file()
    assert (shown / "timestep_000_agentview_overlay.png").is_file()


def test_a_checkpoint_acts_the_same_in_its_training_run_and_evaluated_alone(
    tmp_path: Path,
) -> None:
    """The evaluation stage after training and ``stages=[eval]`` from the saved checkpoint in a
    fresh process take the same actions on the same seeds: the policy's sampling noise is
    seeded by the episodes, not left to whatever the process drew before (unseeded, they
    differed by up to 3 action units here)."""
    import numpy as np
    import pandas as pd

    common = [
        "+experiment=quickstart",
        "debug=limit",
        "logger=none",
        "print_config=false",
        "data.collect.task_ids=[0,1]",
        "eval.task_ids=[0]",
        "eval.n_episodes=2",
        "eval.n_envs=2",
        "eval.max_steps=30",
        "eval.n_videos=0",
        "eval.record_dataset=true",
        "task_suite.resolution=64",
        "policy.image_size=48",
        f"paths.root_dir={tmp_path}",
    ]
    runs = {
        "trained": [*common, "stages=[collect,train,eval]"],
        "alone": [
            *common,
            "stages=[eval]",
            f"policy.path={tmp_path / 'trained' / 'checkpoints' / 'last' / 'pretrained_model'}",
        ],
    }
    actions = {}
    for name, args in runs.items():
        out = run_vlaexp([*args, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-4000:]
        rollouts = tmp_path / name / "eval" / "rollouts" / "data"
        frame = pd.concat(pd.read_parquet(p) for p in sorted(rollouts.rglob("*.parquet")))
        actions[name] = np.stack(frame["action"].to_numpy())
    assert actions["trained"].shape == (60, 7)  # 2 episodes x 30 steps
    assert actions["trained"].std() > 0.05  # a policy that acts, not a constant
    np.testing.assert_array_equal(actions["trained"], actions["alone"])


def test_a_failed_episode_ends_a_few_steps_into_the_experts_stall(tmp_path: Path) -> None:
    import numpy as np
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations, end_stalled_failure
    from vlaexp.data.episodes import read_episode_records
    from vlaexp.sim.rollout import Episode
    from vlaexp.sim.workers import SuiteSpec

    move, still = np.full(7, 0.5, np.float32), np.zeros(7, np.float32)
    still[6] = 1.0  # the gripper held closed is no motion
    acts = [move] * 3 + [still] * 2 + [move] + [still] * 6
    ep = Episode(0, 0, "x", [{"t": t} for t in range(12)], acts, [0.0] * 12)
    cut = end_stalled_failure(ep, 3)
    assert cut.steps == 9 and [o["t"] for o in cut.observations] == list(range(9))
    assert len(cut.rewards) == 9 and ep.steps == 12  # the first stall (2 steps) is too short
    assert end_stalled_failure(ep, 7) is ep  # never still that long
    assert end_stalled_failure(ep, None) is ep
    ep.success = True
    assert end_stalled_failure(ep, 3) is ep  # successes are never cut
    with pytest.raises(ValueError, match="end_failures_after_idle must be >= 1"):
        end_stalled_failure(Episode(0, 0, "x", actions=acts), 0)

    # wired through collect: a frozen expert's episodes end 5 steps into the freeze
    cfg = compose_config(
        [
            "task_suite=tabletop_spatial",
            "task_suite.resolution=32",
            "task_suite.perturbation.freeze=true",
        ]
    ).task_suite
    spec = SuiteSpec(OmegaConf.to_container(cfg, resolve=True), ["agentview"])
    collect_demonstrations(
        spec,
        tmp_path / "d",
        "test/f",
        ["agentview"],
        2,
        task_ids=[0],
        use_videos=False,
        end_failures_after_idle=5,
    )
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.episodes import episode_outcomes

    records = read_episode_records(tmp_path / "d")
    assert len(records) == 2 and not any(r["success"] for r in records)
    ds = LeRobotDataset("test/f", root=tmp_path / "d")
    actions = np.stack(ds.hf_dataset["action"])
    index = np.stack(ds.hf_dataset["episode_index"])
    outcomes = {o["episode_index"]: o for o in episode_outcomes(ds.meta)}  # what value labels read
    for r in records:
        assert r["expert_fault"] == "freeze" and r["length"] < r["steps_run"]
        moves = np.abs(actions[index == r["episode_index"], :6]).sum(axis=1) > 0
        assert len(moves) == r["length"] and not moves[-5:].any() and moves[-6]
        # the expert's action count when it froze: its first still action is frame step - 1
        assert r["expert_fault_step"] - 1 == r["length"] - 5
        assert outcomes[r["episode_index"]]["fault_frame"] == r["length"] - 5


def test_collect_records_which_episodes_got_the_action_noise(tmp_path) -> None:
    """A recording with perturbation.action_noise_prob < 1 mixes clean and jittery demos; each
    episode's row says which (expert_action_noise), and a clean row's recorded actions are
    those of the same seed recorded without any noise."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from omegaconf import OmegaConf

    from vlaexp.config.compose import compose_config
    from vlaexp.data.collect import collect_demonstrations
    from vlaexp.data.episodes import read_episode_records
    from vlaexp.sim.workers import SuiteSpec

    def record(name: str, *overrides: str) -> tuple[list, np.ndarray, np.ndarray]:
        cfg = compose_config(
            ["task_suite=tabletop_spatial", "task_suite.resolution=32", *overrides]
        ).task_suite
        spec = SuiteSpec(OmegaConf.to_container(cfg, resolve=True), ["agentview"])
        collect_demonstrations(
            spec, tmp_path / name, f"test/{name}", ["agentview"], 6, task_ids=[0], use_videos=False
        )
        ds = LeRobotDataset(f"test/{name}", root=tmp_path / name)
        actions = np.stack(ds.hf_dataset["action"])
        return (
            read_episode_records(tmp_path / name),
            actions,
            np.stack(ds.hf_dataset["episode_index"]),
        )

    mixed, actions, index = record(
        "mix",
        "task_suite.perturbation.action_noise=0.1",
        "task_suite.perturbation.action_noise_prob=0.5",
    )
    clean, clean_actions, clean_index = record("clean")
    assert {r["expert_action_noise"] for r in mixed} == {0.0, 0.1}  # both kinds in 6 seeds
    assert {r["expert_action_noise"] for r in clean} == {0.0}
    by_seed = {r["seed"]: r["episode_index"] for r in clean}
    for r in mixed:
        mine = actions[index == r["episode_index"]]
        ref = clean_actions[clean_index == by_seed[r["seed"]]]
        if r["expert_action_noise"] == 0.0:
            np.testing.assert_array_equal(mine, ref)
        else:
            n = min(len(mine), len(ref))
            assert np.abs(mine[:n] - ref[:n]).max() > 0.05


def test_nested_and_missing_metrics_reach_the_summary_and_the_loggers(tmp_path: Path) -> None:
    """value_eval's AUROC per failure kind is a dict, and a test split without failures has
    no AUROC (None): the report stage once crashed on both after a GPU run's evaluation."""
    from lightning.pytorch.loggers import CSVLogger
    from omegaconf import OmegaConf

    from vlaexp.pipeline.context import RunContext
    from vlaexp.pipeline.report import report_stage

    cfg = OmegaConf.create(
        {"name": "x", "seed": 0, "policy": {"name": "p"}, "task_suite": {"name": "t"}}
        | {"camera": {"name": "c"}}
    )
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run", _loggers=[CSVLogger(tmp_path, "csv")])
    ctx.run_dir.mkdir()
    ctx.log_metrics(
        {
            "value_eval/midpoint_auroc": None,
            "value_eval/by_kind": {"fault": {"failures": 8, "auroc": 0.425}, "noise": {}},
            "value_eval/top1": 0.0649,
        }
    )
    ctx.loggers[0].save()
    report_stage(ctx)
    summary = json.loads((ctx.run_dir / "summary.json").read_text())["metrics"]
    assert summary == {
        "value_eval/by_kind/fault/auroc": 0.425,
        "value_eval/by_kind/fault/failures": 8,
        "value_eval/midpoint_auroc": None,
        "value_eval/top1": 0.0649,
    }
    table = (ctx.run_dir / "summary.md").read_text()
    assert "| value_eval/by_kind/fault/auroc | 0.425 |" in table
    assert "| value_eval/midpoint_auroc | None |" in table
    with open(next(tmp_path.glob("csv/**/metrics.csv"))) as f:
        logged = next(csv.DictReader(f))
    assert (
        logged["value_eval/by_kind/fault/failures"] == "8"
        and "value_eval/midpoint_auroc" not in logged
    )
