"""Shared fixtures: small LeRobotDatasets in the real on-disk format, made by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist runs one test process per worker (make test: one per core). torch's default of a
# thread per core in each of them oversubscribes the cores, and its OpenMP threads spin while
# they wait: Pi0.5's tiny overfit test took 218 s beside another worker on 2 cores, 28 s alone.
# Each worker gets its share of the cores, set before torch starts (also for the processes the
# tests launch: CLI runs, DDP ranks).
if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_lerobot_dataset(
    root: Path,
    n_episodes: int = 6,
    length: int = 16,
    resolution: int = 32,
    cameras: tuple[str, ...] = ("agentview", "wrist"),
    failed: tuple[int, ...] = (),
    use_videos: bool = False,
) -> Path:
    """A LeRobotDataset v3 with the LIBERO contract, written by LeRobot's own writer.

    Actions follow a smooth per-episode pattern that depends on the state, so a policy can
    learn them; episodes listed in ``failed`` are flagged unsuccessful in the sidecar.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.data.collect import dataset_features
    from vlaexp.data.episodes import EPISODES_SIDECAR

    rng = np.random.default_rng(0)
    ds = LeRobotDataset.create(
        "test/tiny",
        fps=20,
        features=dataset_features(list(cameras), resolution, use_videos),
        root=root,
        use_videos=use_videos,
    )
    records = []
    for ep in range(n_episodes):
        success = ep not in failed
        for i in range(length):
            t = i / length
            state = np.concatenate(
                [np.full(3, t), np.full(3, ep / n_episodes), [0.02, 0.02]]
            ).astype(np.float32)
            action = np.concatenate(
                [np.sin(2 * np.pi * t + ep) * np.ones(3), np.zeros(3), [1.0 if t > 0.5 else -1.0]]
            )
            frame = {
                f"observation.images.{c}": rng.integers(
                    0, 255, (resolution, resolution, 3), dtype=np.uint8
                )
                for c in cameras
            }
            frame.update(
                {
                    "observation.state": state,
                    "action": action.astype(np.float32),
                    "next.reward": np.array([float(success and i == length - 1)], dtype=np.float32),
                    "next.done": np.array([i == length - 1]),
                    "next.success": np.array([success and i == length - 1]),
                    "task": f"pick up the cube number {ep % 2}",
                }
            )
            ds.add_frame(frame)
        ds.save_episode()
        records.append({"episode_index": ep, "task_id": ep % 2, "seed": ep, "success": success})
    ds.finalize()
    (root / EPISODES_SIDECAR).write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 episodes x 16 frames, two 32x32 cameras (PNG frames), episode 5 failed."""
    return make_lerobot_dataset(tmp_path_factory.mktemp("data") / "tiny", failed=(5,))


@pytest.fixture(scope="session")
def tiny_video_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same contract with mp4 cameras, as the collect stage writes by default."""
    return make_lerobot_dataset(
        tmp_path_factory.mktemp("data") / "tiny_video", n_episodes=3, use_videos=True
    )


@pytest.fixture
def tiny_data(tiny_dataset: Path) -> list[str]:
    """Overrides that point `data` at ``tiny_dataset``."""
    return [
        "data=lerobot",
        f"data.root={tiny_dataset}",
        "data.repo_id=test/tiny",
        "data.camera_keys.agentview=observation.images.agentview",
        "data.camera_keys.wrist=observation.images.wrist",
        "data.num_workers=0",
        "data.batch_size=8",
    ]


@pytest.fixture
def tiny_overrides(tiny_data: list[str], tmp_path: Path) -> list[str]:
    """Overrides that train the BC policy for a few CPU steps on ``tiny_dataset`` (no sim)."""
    return [
        *tiny_data,
        "stages=[train]",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=1",
        "policy.image_size=32",
        "policy.hidden_dim=32",
        "policy.chunk_size=4",
        "policy.n_action_steps=2",
        "print_config=false",
        f"paths.root_dir={tmp_path}",
    ]
