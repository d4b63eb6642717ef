"""TabletopSuite: construction as Hydra does it, validation, task tables, configs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlaexp.config.sim import PerturbationConfig, TabletopSuiteConfig
from vlaexp.errors import ConfigError
from vlaexp.sim.tabletop import evaluate_experts
from vlaexp.sim.tabletop.env import TabletopEnv
from vlaexp.sim.tabletop.expert import TabletopExpert
from vlaexp.sim.tabletop.suite import TabletopSuite
from vlaexp.sim.tabletop.tasks import DEFAULT_MAX_STEPS, SUITES

CONF = Path(__file__).resolve().parents[2] / "conf" / "task_suite"


def make(**overrides) -> TabletopSuite:
    kwargs = dict(
        name="tabletop_spatial",
        max_steps=220,
        fps=20,
        resolution=64,
        n_eval_seeds=50,
        perturbation=PerturbationConfig(),
        task_type="spatial",
        cameras=["agentview", "wrist"],
    )
    kwargs.update(overrides)
    return TabletopSuite(**kwargs)


def test_hydra_style_construction_builds_envs_and_experts():
    suite = make()
    assert suite.task_ids == list(range(10)) and suite.max_steps == 220
    env = suite.make_env(3)
    assert isinstance(env, TabletopEnv) and env.instruction == suite.instruction(3)
    assert env.max_steps == 220 and env.cameras == ("agentview", "wrist")
    obs = env.reset(suite.eval_seeds(3)[0])
    assert obs["images"]["wrist"].shape == (64, 64, 3)
    assert isinstance(suite.make_expert(env), TabletopExpert)
    env.close()


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_config_files_instantiate_each_suite(suite_name):
    raw = OmegaConf.load(CONF / f"tabletop_{suite_name}.yaml")
    defaults = OmegaConf.to_container(raw.defaults)
    assert defaults == [{"/schema/task_suite@_here_": "tabletop"}, "_self_"]
    assert raw.name == f"tabletop_{suite_name}" and raw.task_type == suite_name
    assert raw.max_steps == DEFAULT_MAX_STEPS[suite_name]
    # What Hydra composes from the schema plus this file, then instantiates.
    body = OmegaConf.masked_copy(raw, ["name", "task_type", "max_steps"])
    cfg = OmegaConf.merge(OmegaConf.structured(TabletopSuiteConfig), body)
    cfg.perturbation.distractors = 1
    suite = instantiate(cfg, cameras=["wrist"])
    assert isinstance(suite, TabletopSuite) and suite.task_type == suite_name
    assert suite.perturbation == PerturbationConfig(distractors=1)
    assert suite.cameras == ("wrist",) and len(suite.task_ids) == 10


def test_perturbation_given_as_dict():
    suite = make(perturbation={"object_colors": True, "freeze": True})
    assert suite.perturbation == PerturbationConfig(object_colors=True, freeze=True)
    with pytest.raises(ConfigError, match="Unknown perturbation field 'colours'"):
        make(perturbation={"colours": True})


def test_bad_inputs_name_the_valid_choices():
    with pytest.raises(
        ConfigError, match=r"task_type 'spacial'.*Did you mean 'spatial'.*goal, long"
    ):
        make(task_type="spacial")
    with pytest.raises(ConfigError, match=r"camera 'front'.*agentview, wrist"):
        make(cameras=["front"])
    with pytest.raises(ConfigError, match="cameras is empty"):
        make(cameras=[])
    with pytest.raises(ConfigError, match=r"task id 10 is out of range: \S+ has tasks 0\.\.9"):
        make().instruction(10)
    with pytest.raises(ConfigError, match="out of range"):
        make().make_env(-1)
    with pytest.raises(ConfigError, match="max_steps=0"):
        make(max_steps=0)
    with pytest.raises(ConfigError, match=r"fps=30 .* 10, 20, 25 or 50"):
        make(fps=30)
    with pytest.raises(ConfigError, match="resolution=4"):
        make(resolution=4)


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_ten_distinct_tasks_per_suite(suite_name):
    instructions = [t.instruction for t in SUITES[suite_name]]
    assert len(instructions) == 10 and len(set(instructions)) == 10
    assert all(t.suite == suite_name for t in SUITES[suite_name])
    if suite_name == "goal":  # one fixed scene, different goals
        assert len({t.scene for t in SUITES[suite_name]}) == 1
    if suite_name == "long":
        assert all(len(t.goals) == 2 and len(t.plan) == 2 for t in SUITES[suite_name])


def test_spatial_tasks_share_objects_and_differ_in_layout():
    scenes = {t.scene for t in SUITES["spatial"]}
    assert len(scenes) == 1
    seed = 123
    starts = [t.layout(np.random.default_rng(seed)).poses["red_cube_a"] for t in SUITES["spatial"]]
    assert len(set(starts)) == 10


def test_layouts_are_seeded():
    task = SUITES["object"][2]
    a = task.layout(np.random.default_rng(5)).poses
    b = task.layout(np.random.default_rng(5)).poses
    c = task.layout(np.random.default_rng(6)).poses
    assert a == b and a != c


def test_eval_and_train_seeds_are_fixed_and_disjoint():
    suite = make()
    assert suite.eval_seeds(2) == make().eval_seeds(2) and len(suite.eval_seeds(2)) == 50
    assert not set(suite.eval_seeds(2)) & set(suite.train_seeds(2, 500))


def test_evaluate_experts_cli_writes_the_table(tmp_path, capsys):
    out = tmp_path / "experts"
    argv = ["--suites", "goal", "--episodes", "1", "--out", str(out), "--workers", "2"]
    assert evaluate_experts.main(argv) == 0
    readme = (out / "README.md").read_text()
    assert "python -m vlaexp.sim.tabletop.evaluate_experts --suites goal --episodes 1" in readme
    assert "| goal | 10 | 1 | 100% | 100% |" in readme
    assert readme.count("| goal | ") == 11  # the summary row and ten task rows
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["task_id"] for r in results] == list(range(10))
    assert all(r["success_rate"] == 1.0 and r["horizon"] == 300 for r in results)
    assert "press the button" in capsys.readouterr().out


def test_evaluate_experts_parses_perturbations():
    parsed = evaluate_experts.parse_perturbation(["distractors=2", "object_colors=true"])
    assert parsed == {"distractors": 2, "object_colors": True}
    suite = evaluate_experts.make_suite("goal", "freeze", parsed)
    assert suite.perturbation == PerturbationConfig(distractors=2, object_colors=True, freeze=True)
    with pytest.raises(ValueError, match="key in"):
        evaluate_experts.parse_perturbation(["shadows=true"])
    with pytest.raises(ValueError, match="true or false"):
        evaluate_experts.parse_perturbation(["table_texture=yes"])


def test_suites_need_only_numpy_and_mujoco(tmp_path):
    """The GPU machine has no Hydra stack: a suite must build, render and solve a task with
    omegaconf, hydra, torch and lightning unimportable."""
    import subprocess
    import sys

    script = """
import sys
for name in ("omegaconf", "hydra", "torch", "lightning", "lerobot", "robosuite"):
    sys.modules[name] = None  # any import of them raises ImportError
from vlaexp.sim.tabletop.suite import TabletopSuite
suite = TabletopSuite(name="tabletop_goal", max_steps=300, task_type="goal", resolution=32)
env = suite.make_env(7)
expert = suite.make_expert(env)
obs = env.reset(suite.eval_seeds(7)[0])
expert.reset()
for _ in range(60):
    result = env.step(expert.act(obs))
    obs = result.obs
    if result.terminated:
        break
print(result.terminated, sorted(obs["images"]), obs["images"]["wrist"].shape)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "True ['agentview', 'wrist'] (32, 32, 3)"
