"""The scripted expert solves every task, and each expert fault makes it fail as intended."""

from __future__ import annotations

import numpy as np
import pytest

from vlaexp.config.sim import PerturbationConfig
from vlaexp.sim.tabletop import fixtures as fx
from vlaexp.sim.tabletop import predicates as pr
from vlaexp.sim.tabletop.evaluate_experts import make_suite, run_episode
from vlaexp.sim.tabletop.expert import TabletopExpert
from vlaexp.sim.tabletop.skills import MIN_HOLD, PHASES, fingers_done
from vlaexp.sim.tabletop.tasks import OTHER, RED, SUITES, TARGET


def episode(suite: str, task_id: int, seed_index: int = 0, **faults):
    """Run one expert episode; return (env, expert, result dict). The caller closes env."""
    s = make_suite(suite)
    s.perturbation = PerturbationConfig(**faults)
    env = s.make_env(task_id, render=False)
    expert = s.make_expert(env)
    expert.phases_seen = set()  # every phase its actions served (DART noise is chosen by phase)
    act = expert.act

    def act_noting_the_phase(obs):
        action = act(obs)
        expert.phases_seen.add(expert.phase)
        return action

    expert.act = act_noting_the_phase
    result = run_episode(env, expert, s.eval_seeds(task_id)[seed_index])
    return env, expert, result


@pytest.mark.parametrize(
    ("suite", "task_id"), [(s, t) for s in SUITES for t in range(len(SUITES[s]))]
)
def test_expert_solves_every_task_on_its_first_seed(suite, task_id):
    env, expert, result = episode(suite, task_id)
    env.close()
    assert result["success"] and expert.fault == "none"
    assert result["steps"] < make_suite(suite).max_steps * 0.6  # comfortably inside the horizon
    # the phases it reports are the declared ones (action_noise_phases is checked against them)
    assert expert.phases_seen and expert.phases_seen - {""} <= set(PHASES)
    assert make_suite(suite).expert_phases == PHASES


@pytest.mark.parametrize("suite", list(SUITES))
def test_expert_solves_more_seeds(suite):
    for task_id in (0, len(SUITES[suite]) - 1):
        for seed_index in (1, 2):
            env, _, result = episode(suite, task_id, seed_index)
            env.close()
            assert result["success"], (suite, task_id, seed_index)


def test_expert_is_deterministic():
    actions = []
    for _ in range(2):
        s = make_suite("goal")
        env = s.make_env(4, render=False)
        expert = s.make_expert(env)
        obs = env.reset(77)
        expert.reset()
        run = []
        for _ in range(40):
            run.append(expert.act(obs))
            obs = env.step(run[-1]).obs
        actions.append(np.array(run))
        env.close()
    np.testing.assert_array_equal(actions[0], actions[1])
    assert actions[0].dtype == np.float32 and np.abs(actions[0]).max() <= 1.0


def first_actions(perturbation: PerturbationConfig, seed: int, n: int = 30) -> tuple:
    """The expert's first ``n`` actions on spatial task 0 from ``seed``, and its info()."""
    s = make_suite("spatial")
    s.perturbation = perturbation
    env = s.make_env(0, render=False)
    expert = s.make_expert(env)
    obs = env.reset(seed)
    expert.reset()
    run = []
    for _ in range(n):
        run.append(expert.act(obs))
        obs = env.step(run[-1]).obs
    env.close()
    return np.array(run), expert.info()


def test_action_noise_prob_mixes_clean_and_jittery_episodes():
    """perturbation.action_noise_prob: a share of the episodes get the recorded action noise
    (drawn per seed), the others are the clean expert's to the bit; the fault draw is the one
    the episode gets with every episode noisy."""
    mixed = PerturbationConfig(action_noise=0.1, action_noise_prob=0.5, freeze=True, fault_prob=0.5)
    everyone = PerturbationConfig(action_noise=0.1, freeze=True, fault_prob=0.5)
    clean = PerturbationConfig(freeze=True, fault_prob=0.5)
    noisy = []
    for seed in range(12):
        actions, info = first_actions(mixed, seed)
        reference, ref_info = first_actions(clean, seed)
        assert info["fault"] == ref_info["fault"] == first_actions(everyone, seed, 1)[1]["fault"]
        if info["action_noise"] == 0.0:
            np.testing.assert_array_equal(actions, reference)
        else:
            assert info["action_noise"] == 0.1 and np.abs(actions - reference).max() > 0.05
        noisy.append(info["action_noise"] > 0)
    assert 2 <= sum(noisy) <= 10  # about half of 12 (binomial: outside 2..10 has p < 0.04)
    assert first_actions(everyone, 0, 1)[1]["action_noise"] == 0.1
    assert (
        first_actions(PerturbationConfig(action_noise=0.1, action_noise_prob=0.0), 0, 1)[1][
            "action_noise"
        ]
        == 0.0
    )
    with pytest.raises(ValueError, match="action_noise_prob"):
        first_actions(PerturbationConfig(action_noise=0.1, action_noise_prob=1.5), 0, 1)


def test_expert_must_be_reset_with_the_env():
    s = make_suite("spatial")
    env = s.make_env(0, render=False)
    expert = s.make_expert(env)
    obs = env.reset(1)
    with pytest.raises(RuntimeError, match=r"call expert\.reset\(\) after"):
        expert.act(obs)
    expert.reset()
    env.step(expert.act(obs))
    obs = env.reset(2)
    with pytest.raises(RuntimeError, match="expert was not"):
        expert.act(obs)
    env.close()


def test_early_release_drops_the_object_away_from_the_plate():
    env, expert, result = episode("spatial", 0, early_release=True)
    assert expert.fault == "early_release" and expert.fault_step is not None
    assert not result["success"] and result["steps"] == make_suite("spatial").max_steps
    cube = env.object_pos(TARGET)
    assert cube[2] < 0.03  # back on the table, not carried and not on the plate
    assert np.linalg.norm(cube[:2] - env.body_pos("plate")[:2]) > fx.PLATE_RADIUS
    env.close()


def test_early_release_lets_go_of_the_drawer_half_way():
    env, expert, result = episode("goal", 6, early_release=True)
    assert expert.fault == "early_release" and not result["success"]
    assert 0.0 < env.joint_value("drawer") < pr.DRAWER_OPEN_AT
    env.close()


def test_early_release_skips_tasks_without_a_held_motion():
    env, expert, result = episode("goal", 7, early_release=True)  # press the button
    assert expert.fault == "none" and result["success"]
    env.close()


def test_wrong_target_moves_the_look_alike():
    env, expert, result = episode("spatial", 0, wrong_target=True)
    assert expert.fault == "wrong_target" and expert.fault_step == 0
    assert not result["success"]
    assert pr.OnPlate(OTHER).holds(env) and not pr.OnPlate(TARGET).holds(env)
    env.close()


def test_wrong_target_does_another_goal():
    env, _, result = episode("goal", 7, wrong_target=True)  # press the button
    assert not result["success"] and pr.KnobTurned().holds(env)
    assert not pr.ButtonPressed().holds(env)
    env.close()


def test_freeze_stops_the_gripper():
    s = make_suite("goal")
    s.perturbation = PerturbationConfig(freeze=True)
    env = s.make_env(0, render=False)
    expert = s.make_expert(env)
    obs = env.reset(s.eval_seeds(0)[0])
    expert.reset()
    tcp = []
    for _ in range(s.max_steps):
        result = env.step(expert.act(obs))
        obs = result.obs
        tcp.append(env.tcp_pos().copy())
    assert expert.fault == "freeze" and expert.fault_step is not None
    assert not result.info["success"] and not pr.OnPlate(RED).holds(env)
    after = np.array(tcp[expert.fault_step + 2 :])  # the weld settles within two steps
    assert np.abs(after - after[0]).max() < 2e-3
    env.close()


def test_action_noise_perturbs_actions_with_the_given_std():
    s = make_suite("spatial")
    env = s.make_env(0, render=False)
    clean = TabletopExpert(env, PerturbationConfig())
    noisy = TabletopExpert(env, PerturbationConfig(action_noise=0.1))
    env.reset(s.eval_seeds(0)[0])
    clean.reset()
    noisy.reset()
    obs = env.reset(s.eval_seeds(0)[0])
    diffs = []
    for _ in range(25):  # same state for both: compare before stepping
        a_clean, a_noisy = clean.act(obs), noisy.act(obs)
        diffs.append(a_noisy - a_clean)
        obs = env.step(a_clean).obs
    diffs = np.array(diffs)[:, :6]  # the gripper column is clipped at +-1
    assert np.std(diffs) == pytest.approx(0.1, rel=0.3)
    assert noisy.info() == {"fault": "none", "fault_step": None, "action_noise": 0.1}
    env.close()


def test_small_action_noise_is_corrected_heavy_noise_fails():
    # The expert is closed-loop: a little noise only slows it down ...
    for seed_index in range(2):
        env, _, noisy = episode("goal", 0, seed_index, action_noise=0.05)
        env.close()
        assert noisy["success"]
    # ... while 1.5 cm of jitter per step defeats pushing and pulling.
    for task_id in (5, 6):
        for seed_index in range(3):
            env, _, result = episode("goal", task_id, seed_index, action_noise=0.3)
            env.close()
            assert not result["success"], (task_id, seed_index)


def test_fault_prob_and_mixing():
    s = make_suite("goal")
    s.perturbation = PerturbationConfig(early_release=True, wrong_target=True, freeze=True)
    env = s.make_env(9, render=False)
    expert = s.make_expert(env)
    seen = set()
    for seed in s.eval_seeds(9)[:12]:
        env.reset(seed)
        expert.reset()
        seen.add(expert.fault)
    assert seen == {"early_release", "wrong_target", "freeze"}
    never = TabletopExpert(env, PerturbationConfig(freeze=True, fault_prob=0.0))
    env.reset(1)
    never.reset()
    assert never.fault == "none"
    with pytest.raises(ValueError, match="fault_prob"):
        TabletopExpert(env, PerturbationConfig(fault_prob=1.5))
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("suite", list(SUITES))
def test_expert_success_rate_on_all_eval_seeds(suite):
    s = make_suite(suite)
    for task_id in s.task_ids:
        env = s.make_env(task_id, render=False)
        expert = s.make_expert(env)
        wins = [run_episode(env, expert, seed)["success"] for seed in s.eval_seeds(task_id)]
        env.close()
        assert np.mean(wins) >= 0.95, (suite, task_id, np.mean(wins))


@pytest.mark.parametrize("task_id", [0, 1])
def test_recorded_actions_replayed_open_loop_succeed(task_id):
    """What a policy imitates is the recorded action sequence alone (no privileged state): replayed
    from the same seed it must solve the task, and a perturbed replay must not always do so (the
    predicate is not met by any motion near the plate)."""
    s = make_suite("spatial")
    env = s.make_env(task_id, render=False)
    expert = s.make_expert(env)
    seed = s.train_seeds(task_id, 1)[0]
    obs = env.reset(seed)
    expert.reset()
    actions = []
    while not env.is_success() and len(actions) < s.max_steps:
        actions.append(expert.act(obs))
        obs = env.step(actions[-1]).obs
    assert env.is_success()

    def replay(noise: float) -> bool:
        rng = np.random.default_rng(0)
        env.reset(seed)
        for a in actions:
            env.step(np.clip(a + rng.normal(0.0, noise, a.shape), -1, 1).astype(np.float32))
            if env.is_success():
                return True
        return False

    assert replay(0.0)
    assert not replay(0.3)
    env.close()


def test_holds_end_when_the_fingers_stop():
    """The grasp and release holds last until the fingers stop moving or reach the commanded
    opening, which the policy sees in the state, not a fixed count of look-alike steps: every
    step the hold went on the fingers were still on their way, and the next phase starts on
    the step they arrived."""
    s = make_suite("spatial")
    env = s.make_env(0, render=False)
    env.reset(s.eval_seeds(0)[0])
    trace = []  # (phase, commanded grip, finger joints when the command was issued)
    for cmd in s.task(0).plan[0].run(env):
        trace.append((cmd.phase, float(cmd.action[6]), env.finger_qpos()))
        env.step(cmd.action)
    env.close()
    phases = [p for p, _, _ in trace]
    for phase, then in (("grasp", "lift"), ("release", "retreat")):
        steps = [k for k, p in enumerate(phases) if p == phase]
        assert steps == list(range(steps[0], steps[-1] + 1)), phase  # one hold, no regrasp
        end = steps[-1] + 1
        assert phases[end] == then
        grip = trace[steps[0]][1]
        done = [fingers_done(trace[k][2], trace[k - 1][2], grip) for k in range(steps[0], end + 1)]
        assert done[-1], phase  # arrived when the next phase began
        assert not any(done[MIN_HOLD:-1]), (phase, done)  # and not before
        assert MIN_HOLD <= len(steps) <= 5, (phase, len(steps))
    assert trace[phases.index("lift")][2][0] > 0.015  # closed on the 4 cm cube, not on nothing
