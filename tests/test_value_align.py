"""Stage 1 of the value function: captions of simulator scenes, a hub-format image-text
dataset, the projector-only caption training, and stage 2 starting from its projector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.test_value_model import tiny, value_cfg
from vlaexp.config.compose import compose_config, resolved_run_config
from vlaexp.errors import ConfigError, MissingPathError
from vlaexp.pipeline.context import RunContext
from vlaexp.pipeline.registry import get_stage
from vlaexp.value.align import caption_tokens, describe_scene, hub_pairs, load_projector
from vlaexp.value.model import make_value_function


def test_scene_caption_names_objects_fixtures_places_and_task() -> None:
    from vlaexp.sim.factory import make_task_suite

    cfg = compose_config(["task_suite=tabletop_spatial", "task_suite.resolution=32"])
    suite = make_task_suite(cfg.task_suite, ("agentview",))
    env = suite.make_env(0)  # the target cube lies to the left (-x) of the plate
    env.reset(suite.train_seeds(0, 1)[0])
    caption = describe_scene(env)
    assert caption.count("a red cube") == 2 and "the plate" in caption
    assert caption.endswith(f"Task: {env.instruction}")
    target = env.task.carried[0]
    plate_x, cube_x = env.body_pos("plate")[0], env.object_pos(target)[0]
    assert cube_x < plate_x  # what the caption's places are computed from
    cubes = [p for p in caption.split("; ") if p.startswith("a red cube")]
    assert any("left" in p or "middle" in p for p in cubes)


def test_caption_tokens_mark_the_target_after_the_prompt() -> None:
    model = tiny()
    tokens, mask, target = caption_tokens(
        model.tokenizer, ["Describe the scene.", ""], ["a red cube", "the plate"], 64
    )
    for i, (prompt, text) in enumerate([("Describe the scene.", "a red cube"), ("", "the plate")]):
        head = model.tokenizer(prompt)["input_ids"]
        tail = model.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        n = len(head) + len(tail) + 1  # + EOS
        assert mask[i].sum() == n and not mask[i, n:].any()
        assert target[i].nonzero().flatten().tolist() == list(range(len(head), n))
        assert tokens[i, len(head) : len(head) + len(tail)].tolist() == tail


def test_hub_format_pairs_and_their_errors(tmp_path: Path) -> None:
    """A VQA-style dataset in the hub's layout (parquet with an Image feature), loaded from a
    local directory as a hub id would be."""
    import datasets
    from PIL import Image

    rows = {
        "image": [Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)) for i in range(3)],
        "question": [f"what colour is box {i}?" for i in range(3)],
        "multiple_choice_answer": ["red", "green", "blue"],
    }
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "multiple_choice_answer": datasets.Value("string"),
        }
    )
    (tmp_path / "vqa" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(
        tmp_path / "vqa" / "data" / "train-00000-of-00001.parquet"
    )
    align = OmegaConf.create(
        OmegaConf.to_container(
            compose_config(["policy=value_fn_tiny", f"policy.align.repo_id={tmp_path / 'vqa'}"])
        )
    ).policy.align
    align.limit = 2
    pairs = hub_pairs(align, n_cameras=2)
    assert len(pairs) == 2 and pairs[1]["prompt"] == "what colour is box 1?"
    assert pairs[1]["target"] == "green" and pairs[1]["images"].shape == (2, 20, 24, 3)
    assert int(pairs[1]["images"][0, 0, 0, 0]) == 40
    align.text_columns = ["question", "answer"]
    with pytest.raises(ConfigError, match="no column"):
        hub_pairs(align, n_cameras=1)


def test_align_trains_the_projector_only_and_stage_2_starts_from_it(
    tiny_data: list[str], tmp_path: Path
) -> None:
    overrides = [
        *tiny_data,
        "policy=value_fn_tiny",
        "camera=both",
        "task_suite.resolution=32",
        "policy.align.scenes_per_task=3",  # x 10 tasks of the suite
        "policy.align.steps=120",
        "policy.align.batch_size=4",
        "policy.align.lr=2e-2",
        "policy.align.val_fraction=0.25",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
        f"paths.root_dir={tmp_path}",
    ]
    cfg = resolved_run_config(overrides, tmp_path / "run")
    ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run")
    torch.manual_seed(int(cfg.seed))
    fresh = make_value_function(OmegaConf.to_container(cfg.policy, resolve=True))
    get_stage("value_align")(ctx)
    summary = json.loads((ctx.run_dir / "value_align" / "align.json").read_text())
    assert summary["pairs"] == {"train": 22, "val": 8} and summary["steps"] == 120
    # a random frozen tiny Gemma (embeddings of std 0.02) caps how far the loss can fall from
    # ln(1024) = 6.93; the held-out captions still get likelier and frequent words right
    before, after = summary["val_before"], summary["val_after"]
    assert after["caption_loss"] < before["caption_loss"] - 0.05
    assert after["token_acc"] > before["token_acc"] + 0.03
    assert "Task: " in summary["example"]["target"]

    # stage 2 from the projector: it equals stage 1's; SigLIP and Gemma are the seed's
    stage2 = value_cfg("value_fn_tiny", "policy.require_projector=true")
    stage2["projector_path"] = str(tmp_path / "run")
    torch.manual_seed(int(cfg.seed))
    model = make_value_function(stage2)
    aligned = load_projector(tiny(), ctx.artifacts["projector"]).parent
    assert aligned == tmp_path / "run" / "value_align"
    changed = {
        k for k, v in model.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])
    }
    assert changed and all(k.startswith("projector.") for k in changed)

    # the same run resumed in a later call (no value_align this time) finds its stage 1 on disk
    from vlaexp.pipeline.train import stage1_projector

    later = RunContext(cfg=cfg, run_dir=ctx.run_dir)
    assert stage1_projector(later) is None  # a new run: value_align must come first
    later.artifacts["resume_from"] = tmp_path / "run" / "checkpoints" / "001000"
    assert stage1_projector(later) == str(ctx.artifacts["projector"])
    with pytest.raises(ConfigError, match="require_projector=true but no stage-1 projector"):
        make_value_function(value_cfg("value_fn_tiny", "policy.require_projector=true"))
    with pytest.raises(MissingPathError):
        make_value_function({**value_cfg(), "projector_path": str(tmp_path / "nowhere")})
    wider = value_cfg("value_fn_tiny", "policy.projector_hidden=48")
    with pytest.raises(ConfigError, match="projector_hidden"):
        make_value_function({**wider, "projector_path": str(ctx.artifacts["projector"])})

    # co-training: stage 2's train stage takes the caption loss of stage-1 batches too
    ctx.cfg.policy.cotrain_fraction = 0.5
    ctx.cfg.trainer.max_steps = 2
    get_stage("train")(ctx)
    assert np.isfinite(ctx.metrics["value/train_caption_loss"])
