"""Value-function labels (negative time-to-go, per-task normalization, 201 bins), both
losses and the evaluation metrics, on small episode sets with values checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlaexp.errors import VlaexpError
from vlaexp.value.labels import (
    episode_labels,
    expected_value,
    hl_gauss_targets,
    time_to_go_values,
    value_loss,
    value_to_bin,
)
from vlaexp.value.metrics import value_metrics

EPISODES = [
    {"episode_index": 0, "task": "a", "length": 4, "success": True},
    {"episode_index": 1, "task": "a", "length": 3, "success": False},
    {"episode_index": 2, "task": "b", "length": 2, "success": True},
]


def test_time_to_go_counts_down_to_success_and_adds_the_failure_penalty() -> None:
    assert time_to_go_values(4, True, c_fail=7).tolist() == [-3, -2, -1, 0]
    assert time_to_go_values(3, False, c_fail=2).tolist() == [-4, -3, -2]


def test_labels_are_normalized_per_task_clipped_and_binned() -> None:
    a_ok, a_fail, b_ok = episode_labels(EPISODES)  # c_fail = half the task's longest = 2
    np.testing.assert_allclose(a_ok["values"], [-0.75, -0.5, -0.25, 0.0])
    assert a_ok["bins"].tolist() == [50, 100, 150, 200]
    np.testing.assert_allclose(a_fail["values"], [-1.0, -0.75, -0.5])  # -4/4, -3/4, -2/4
    assert a_fail["bins"].tolist() == [0, 50, 100]
    np.testing.assert_allclose(b_ok["values"], [-0.5, 0.0])  # task b's longest is 2
    clipped = episode_labels(EPISODES, c_fail=10)[1]
    assert clipped["values"].tolist() == [-1.0, -1.0, -1.0]  # a large penalty: -1 throughout


def test_labels_need_success_flags_and_bins_need_values_in_range() -> None:
    with pytest.raises(VlaexpError, match=r"episodes \[5\] have no success flag"):
        episode_labels([{"episode_index": 5, "task": "a", "length": 3, "success": None}])
    with pytest.raises(ValueError, match="must lie in"):
        value_to_bin(np.array([0.5]))


def test_hl_gauss_target_is_a_distribution_centred_on_the_value() -> None:
    v = torch.tensor([-0.5, -1.0, 0.0])
    t = hl_gauss_targets(v)
    assert t.shape == (3, 201) and torch.allclose(t.sum(-1), torch.ones(3))
    assert t.argmax(-1).tolist() == [100, 0, 200]
    centers = torch.linspace(-1, 0, 201)
    assert float((t[0] * centers).sum()) == pytest.approx(-0.5, abs=1e-6)
    assert torch.allclose(t[0, 99], t[0, 101])  # symmetric around an interior centre
    # sigma 0.75 bins: about 49% of the mass in the centre bin
    assert float(t[0, 100]) == pytest.approx(0.4950, abs=2e-3)
    # built on the values' device (a GPU batch's values are not on the CPU): the meta device
    # stands in for it here, and mixing devices is an error torch raises
    assert hl_gauss_targets(torch.zeros(3, device="meta")).device.type == "meta"


def test_both_losses_and_the_expected_value() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 201)
    values = torch.tensor([-1.0, -0.8, -0.5, -0.3, -0.01, 0.0])
    bins = torch.from_numpy(value_to_bin(values.numpy()))
    assert value_loss(logits, values, "ce") == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, bins))
    )
    soft = value_loss(logits, values, "hl_gauss", sigma_bins=1e-3)  # a point mass: = CE
    assert float(soft) == pytest.approx(float(value_loss(logits, values, "ce")), rel=1e-4)
    with pytest.raises(ValueError, match="'ce' or 'hl_gauss'"):
        value_loss(logits, values, "mse")
    sharp = torch.full((2, 201), -1e4)
    sharp[0, 40], sharp[1, 200] = 0.0, 0.0
    assert expected_value(sharp).tolist() == pytest.approx([-0.8, 0.0])


def test_metrics_of_a_perfect_and_of_a_shuffled_predictor() -> None:
    labels = episode_labels(EPISODES * 3)
    values = [lab["values"] for lab in labels]
    success = [lab["success"] for lab in labels]

    def logits_for(vals: np.ndarray) -> torch.Tensor:
        lg = torch.full((len(vals), 201), -50.0)
        lg[torch.arange(len(vals)), torch.from_numpy(value_to_bin(vals))] = 50.0
        return lg

    perfect = value_metrics([logits_for(v) for v in values], values, success)
    assert perfect["top1"] == 1.0 and perfect["within_5_bins"] == 1.0 and perfect["top5"] == 1.0
    assert perfect["mae"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["spearman_median"] == pytest.approx(1.0)
    assert perfect["spearman_pooled"] > 0.99 and perfect["midpoint_auroc"] == 1.0
    assert perfect["spearman_median_failures"] == pytest.approx(1.0)
    flipped = value_metrics([logits_for(-1 - v) for v in values], values, success)
    assert flipped["spearman_median"] == pytest.approx(-1.0) and flipped["top1"] < 0.5
    assert flipped["midpoint_auroc"] < 0.5
    # the median is over the successes: flipping only the failures leaves it at 1
    mixed = [logits_for(v if ok else -1 - v) for v, ok in zip(values, success, strict=True)]
    half = value_metrics(mixed, values, success)
    assert half["spearman_median"] == pytest.approx(1.0)
    assert half["spearman_median_failures"] == pytest.approx(-1.0)
    assert half["spearman_pooled_successes"] > 0.99 > half["spearman_pooled"]
    assert half["spearman_pooled_failures"] < -0.99


def certain(v: float, n: int = 10) -> torch.Tensor:
    """Logits float[n, 201] all but certain of value ``v`` at every frame."""
    lg = torch.full((n, 201), -50.0)
    lg[:, int(value_to_bin(np.array([v]))[0])] = 50.0
    return lg


def test_midpoint_auroc_over_failures_faulted_by_their_midpoint() -> None:
    # two successes predicted -0.3 at the midpoint; failure A's fault struck before its
    # midpoint and it is predicted low there (-0.8), failure B's came after and it still looks
    # like a success (-0.1): the plain AUROC is 0.5, over faulted failures alone 1.0
    logits = [certain(-0.3), certain(-0.3), certain(-0.8), certain(-0.1)]
    values = [np.linspace(-0.6, 0.0, 10)] * 2 + [np.linspace(-1.0, -0.4, 10)] * 2
    success = [True, True, False, False]
    m = value_metrics(logits, values, success, [None, None, 2, 7])
    assert m["midpoint_auroc"] == pytest.approx(0.5)
    assert m["midpoint_auroc_faulted"] == pytest.approx(1.0)
    assert m["failures_faulted_by_midpoint"] == 1 and m["failures_fault_known"] == 2
    # the labels at the midpoints (successes -0.27, failures -0.67) separate the outcomes
    assert m["midpoint_auroc_labels"] == pytest.approx(1.0)
    # a short failure labelled nearer its end than a success's midpoint: the labels alone
    # rank it above the successes (a small c_fail), whatever a model predicts
    short = value_metrics(logits, [*values[:3], np.linspace(-0.3, -0.05, 10)], success)
    assert short["midpoint_auroc_labels"] == pytest.approx(0.5)
    # the fault at the midpoint frame itself (5 of 10) counts; an unknown one is left out
    m = value_metrics(logits, values, success, [None, None, 5, None])
    assert m["failures_faulted_by_midpoint"] == 1 and m["failures_fault_known"] == 1
    assert m["midpoint_auroc_faulted"] == pytest.approx(1.0)
    assert "midpoint_auroc_faulted" not in value_metrics(logits, values, success)


def test_midpoint_auroc_by_failure_kind_reports_faults_and_perturbed_episodes_apart() -> None:
    """A mix of scripted faults and episodes perturbed throughout: each kind of failure gets
    its own midpoint AUROC against every success, and the kind comes from the outcome record."""
    from vlaexp.value.metrics import failure_kind

    # successes at -0.3 and -0.2; the perturbed failure looks bad at its midpoint (-0.9), the
    # faulted one still looks like a success (-0.1, its fault comes later)
    logits = [certain(-0.3), certain(-0.2), certain(-0.9), certain(-0.1)]
    values = [np.linspace(-0.6, 0.0, 10)] * 2 + [np.linspace(-1.0, -0.4, 10)] * 2
    success = [True, True, False, False]
    outcomes = [
        {"success": True, "fault_frame": None, "action_noise": 0.2},  # a perturbed success
        {"success": True, "fault_frame": None, "action_noise": None},
        {"success": False, "fault_frame": None, "action_noise": 0.2},
        {"success": False, "fault_frame": 8, "action_noise": 0.0},
    ]
    kinds = [failure_kind(o) for o in outcomes]
    assert kinds == [None, None, "action_noise", "fault"]
    assert failure_kind({"success": False, "fault_frame": 3, "action_noise": 0.2}) == (
        "fault+action_noise"
    )
    assert failure_kind({"success": False}) == "other"
    m = value_metrics(logits, values, success, None, kinds)
    assert m["midpoint_auroc"] == pytest.approx(0.5)
    assert m["midpoint_auroc_by_failure_kind"] == {
        "action_noise": {"failures": 1, "auroc": pytest.approx(1.0), "auroc_labels": 1.0},
        "fault": {"failures": 1, "auroc": pytest.approx(0.0), "auroc_labels": 1.0},
    }
    # a failure whose true midpoint value is above both successes': its kind's labels score 0
    late = [*values[:3], np.linspace(-0.2, 0.0, 10)]
    by_kind = value_metrics(logits, late, success, None, kinds)["midpoint_auroc_by_failure_kind"]
    assert (
        by_kind["fault"]["auroc_labels"] == 0.0 and by_kind["action_noise"]["auroc_labels"] == 1.0
    )
    assert "midpoint_auroc_by_failure_kind" not in value_metrics(logits, values, success)


def test_an_episode_of_one_repeated_frame_has_no_ranking_not_a_nan_median() -> None:
    # a failure frozen from its first frame: 20 identical predictions, whose float32 std is
    # not 0 (rounding in the mean: 1.2e-7 here), which once made the failures' median nan
    frozen = torch.zeros(20, 201)
    frozen[:, 7], frozen[:, 3] = 10.0, 9.0
    assert np.std(expected_value(frozen).numpy()) > 0
    ramp = torch.full((20, 201), -50.0)
    ramp[torch.arange(20), torch.arange(100, 200, 5)] = 50.0
    values = [np.linspace(-0.5, -0.1, 20), np.linspace(-0.5, 0.0, 20), np.linspace(-0.9, -0.4, 20)]
    m = value_metrics([ramp, ramp, frozen], values, [True, False, False])
    assert m["spearman_median_failures"] == pytest.approx(1.0)  # the frozen one is left out


def test_n_step_advantages_by_hand() -> None:
    from vlaexp.value.advantage import n_step_advantages

    labels = np.array([-0.75, -0.5, -0.25, 0.0])  # a 4-step success, scale 4
    values = np.array([-0.5, -0.5, -0.25, 0.1])
    # t=0: (l0 - l2) + V2 - V0; t=1: (l1 - l3) + V3 - V1; t=2, 3: past the end, l_t - V_t
    np.testing.assert_allclose(n_step_advantages(labels, values, 2), [-0.25, 0.1, 0.0, -0.1])
    np.testing.assert_allclose(n_step_advantages(labels, values, None), [-0.25, 0, 0, -0.1])
    # a perfect value function leaves no advantage; V = 0 leaves the N rewards: -N / scale
    np.testing.assert_allclose(n_step_advantages(labels, labels, 2), 0.0)
    np.testing.assert_allclose(n_step_advantages(labels, np.zeros(4), 2)[:2], -0.5)
    with pytest.raises(VlaexpError, match="advantage_horizon"):
        n_step_advantages(labels, values, 0)


def test_positive_thresholds_leave_the_asked_fraction_per_task() -> None:
    from vlaexp.value.advantage import positive_thresholds

    rng = np.random.default_rng(0)
    adv = {"a": np.arange(10.0), "b": rng.normal(size=1000)}
    eps = positive_thresholds(adv, 0.3)
    assert (adv["a"] >= eps["a"]).tolist() == [False] * 7 + [True] * 3
    assert abs((adv["b"] >= eps["b"]).mean() - 0.3) < 0.002
    with pytest.raises(VlaexpError, match="positive_fraction"):
        positive_thresholds(adv, 1.0)


def test_positive_labels_set_thresholds_per_task_over_episodes() -> None:
    from vlaexp.value.advantage import positive_labels

    adv = {0: np.array([0.0, 1.0]), 1: np.array([2.0, 3.0]), 2: np.array([10.0, -10.0])}
    tasks = {0: "a", 1: "a", 2: "b"}
    eps, positive = positive_labels(adv, tasks, 0.5)
    # task a: frames 0, 1, 2, 3 -> the top half at or above the 0.5 quantile (1.5)
    assert eps == {"a": 1.5, "b": 0.0}
    assert [p.tolist() for p in positive.values()] == [[False, False], [True, True], [True, False]]
    # given thresholds (a run's) are applied, not set again
    eps, positive = positive_labels(adv, tasks, 0.5, thresholds={"a": 0.5, "b": 20.0})
    assert eps == {"a": 0.5, "b": 20.0}
    assert [p.tolist() for p in positive.values()] == [[False, True], [True, True], [False, False]]


def test_positive_by_outcome_splits_failures_at_their_fault() -> None:
    from vlaexp.value.advantage import positive_by_outcome

    positive = {
        0: np.array([1, 1, 0, 0], bool),  # success: 2 of 4
        1: np.array([1, 0, 1, 1, 1], bool),  # fault at frame 2: before 1 of 2, after 3 of 3
        2: np.array([0, 0], bool),  # failure, fault unknown
        3: np.array([1, 0, 0, 0], bool),  # fault at 0: after 1 of 4
    }
    shares = positive_by_outcome(
        positive, {0: True, 1: False, 2: False, 3: False}, {0: None, 1: 2, 2: None, 3: 0}
    )
    assert shares == {
        "successes": 0.5,
        "failures_before_fault": 0.5,
        "failures_after_fault": 4 / 7,
        "failures_fault_unknown": 0.0,
    }
    assert (
        positive_by_outcome(positive, dict.fromkeys(positive, True), {})["failures_after_fault"]
        is None
    )


def test_positive_by_progress_profiles_successes_by_tenth() -> None:
    from vlaexp.value.advantage import positive_by_progress

    positive = {
        0: np.array([1, 1, 0, 0], bool),  # success: halves 2 of 2, 0 of 2
        1: np.array([0, 1, 1, 1, 1, 1], bool),  # success: halves 2 of 3, 3 of 3
        2: np.array([1, 1, 1], bool),  # failure: left out
    }
    success = {0: True, 1: True, 2: False}
    assert positive_by_progress(positive, success, n_bins=2) == [4 / 5, 3 / 5]
    # a part no success reaches (episodes shorter than the parts) is None, not 0
    assert positive_by_progress({0: np.array([1, 0], bool)}, {0: True}, n_bins=3) == [
        1.0,
        0.0,
        None,
    ]
    assert positive_by_progress(positive, dict.fromkeys(positive, False)) == [None] * 10


def test_positive_by_group_shares_frames_per_group() -> None:
    from vlaexp.value.advantage import positive_by_group

    positive = {
        0: np.array([1, 1, 0, 0], bool),  # clean: 2 of 4
        1: np.array([1, 1], bool),  # clean: 2 of 2
        2: np.array([0, 0, 0, 1], bool),  # jittery: 1 of 4
        3: np.array([1], bool),  # not recorded: left out
    }
    shares = positive_by_group(positive, {0: 0.0, 1: 0.0, 2: 0.1, 3: None})
    assert shares == {"0.0": 4 / 6, "0.1": 1 / 4}
    assert positive_by_group(positive, {}) == {}


def test_advantage_dataset_adds_two_columns_lerobot_loads(tiny_dataset, tmp_path) -> None:
    import json

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vlaexp.value.advantage import write_advantage_dataset

    adv = {e: np.arange(16) * 0.1 - e for e in range(6)}
    pos = {e: np.arange(16) % 3 == 0 for e in range(6)}
    out = write_advantage_dataset(tiny_dataset, tmp_path / "derived", adv, pos)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["advantage"] == {"dtype": "float32", "shape": [1], "names": None}
    assert (
        "advantage" not in json.loads((tiny_dataset / "meta" / "info.json").read_text())["features"]
    )
    ds = LeRobotDataset("test/derived", root=out)
    for idx in (0, 17, 95):
        item = ds[idx]
        e, f = int(item["episode_index"]), int(item["frame_index"])
        assert float(item["advantage"]) == pytest.approx(adv[e][f], abs=1e-6)
        assert bool(item["advantage_positive"]) == pos[e][f]
    assert item["observation.images.agentview"].shape[0] == 3  # the rest is untouched
    with pytest.raises(VlaexpError, match="already exists"):
        write_advantage_dataset(tiny_dataset, out, adv, pos)
    with pytest.raises(VlaexpError, match="without an advantage"):
        write_advantage_dataset(tiny_dataset, tmp_path / "short", {0: adv[0]}, {0: pos[0]})
    assert not list(tmp_path.glob("short*"))  # nothing half-written is left


def test_value_plot_puts_the_probability_mass_where_the_logits_do(tmp_path) -> None:
    from PIL import Image

    from vlaexp.value.plots import plot_value_over_time

    def bands(mass_on: slice) -> tuple[float, float]:
        """Median brightness of an upper and a lower band of the heat strip's middle."""
        logits = torch.full((20, 201), -20.0)
        logits[:, mass_on] = 0.0
        path = plot_value_over_time(tmp_path / "ep.png", logits, np.full(20, -0.5), "ep")
        img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert img.shape == (300, 800)
        block = img[:, 300:350]
        return float(np.median(block[70:110])), float(np.median(block[180:220]))

    upper, lower = bands(slice(0, 100))  # mass on values -1 .. -0.5: the lower half
    assert lower > upper + 50
    upper, lower = bands(slice(101, 201))  # mass on -0.5 .. 0: the upper half
    assert upper > lower + 50
    with pytest.raises(ValueError, match=r"must be \[T, bins\], \[T\]"):
        plot_value_over_time(tmp_path / "bad.png", torch.zeros(20, 201), np.zeros(19), "bad")


def test_advantage_breakdown_relabels_a_grid_at_the_shares_asked(tmp_path) -> None:
    """experiments/value_function/advantage_breakdown.py on a returned value run: one row per
    horizon and positive share, each with about that share of the test frames positive (the
    per-task thresholds are set on them), and the Monte-Carlo row labelling no failure frame
    positive at 30% (every failure's return is below every success's)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    d = Path(__file__).parents[1] / "experiments" / "value_function"
    out = tmp_path / "grid"
    args = [d / "gpu400_c250_value_predictions.csv", d / "gpu400_mc_advantage.json"]
    args += [d / "gpu400_adv_mix_episodes.jsonl", "--out", out]
    grid = ["--horizon", "10", "mc", "--fraction", "0.3", "0.6"]
    run = subprocess.run(
        [sys.executable, d / "advantage_breakdown.py", *args, *grid],
        capture_output=True,
        text=True,
        cwd=d,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["thresholds"] == "the test frames'"
    rows = {(r["horizon"], r["positive_fraction"]): r for r in result["rows"]}
    assert list(rows) == [(10, 0.3), (10, 0.6), (None, 0.3), (None, 0.6)]
    for (_, fraction), r in rows.items():
        assert len(r["all_positive_by_tenth"]) == 10
        # every frame counted once over the tenths: their mean share is near the one asked
        assert np.mean(r["all_positive_by_tenth"]) == pytest.approx(fraction, abs=0.05)
    mc = rows[(None, 0.3)]["shares"]
    assert mc["failures_before_fault"] == 0.0 and mc["failures_after_fault"] == 0.0
    assert rows[(None, 0.6)]["shares"]["successes"] > mc["successes"]
    assert "| Monte-Carlo | 0.60 |" in out.with_suffix(".md").read_text()
    assert mc["successes"] > 0 and rows[(None, 0.3)]["by_action_noise"] == {}  # no such field


def test_advantage_breakdown_splits_a_jittery_mix_by_action_noise() -> None:
    """advantage_breakdown.py's rows split the positive frames by the noise each episode's
    recorded actions got (the jittery mix: are the jittery demos' frames the negative ones?)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments" / "value_function"))
    try:
        from advantage_breakdown import breakdown
    finally:
        sys.path.pop(0)
    positive = {0: np.array([1, 1, 0, 0]), 1: np.array([0, 0, 0, 1, 0, 0]), 2: np.array([1, 0])}
    records = {0: {"expert_action_noise": 0.0}, 1: {"expert_action_noise": 0.1}, 2: {}}
    success = dict.fromkeys(positive, True)
    advantages = {
        0: np.array([0.1, 0.1, 0.0, 0.0]),
        1: np.array([-0.3, 0.3, 0, 1, 0, -1]),
        2: [9.0],
    }
    row = breakdown(advantages, positive, records, success, dict.fromkeys(positive))
    # episode 2 has no noise on record: left out of the split, not counted as clean
    assert row["by_action_noise"] == {"0.0": 0.5, "0.1": pytest.approx(1 / 6)}
    # the jittery episode's advantages: mean 0, spread wider than the clean one's
    clean, jittery = row["advantage_by_action_noise"].values()
    assert clean == {"frames": 4, "mean": pytest.approx(0.05), "std": pytest.approx(0.05)}
    assert jittery["frames"] == 6 and jittery["mean"] == pytest.approx(0.0)
    assert jittery["std"] == pytest.approx(np.std([-0.3, 0.3, 0, 1, 0, -1]))


def _experiment_script(name: str):
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments" / "value_function"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_time_probe_scores_a_run_as_value_eval_did_and_reads_a_countdown_from_the_step(
    tmp_path,
) -> None:
    """time_probe.py: its scores of the predictions alone are value_eval's (same metrics from
    the same CSV), and on a countdown the frames do not show, the cross-fitted step recovers the
    pooled ranking the predictions lack."""
    import json
    from pathlib import Path

    probe = _experiment_script("time_probe")
    d = Path(__file__).parents[1] / "experiments" / "value_function"
    episodes = probe.read(d / "gpu400_pert_c30_value_predictions.csv")
    logged = json.loads((d / "gpu400_pert_c30_value_eval.json").read_text())
    alone = probe.scores(episodes, {e: ep["pred"] for e, ep in episodes.items()})
    for key in ("spearman_pooled", "spearman_median", "midpoint_auroc"):
        assert alone[key] == pytest.approx(logged[key], abs=1e-4), key
    # 8 successes ranked by their frames, 8 failures counting down to a 100-step limit whose
    # frames all look alike (prediction -0.8 throughout)
    rng = np.random.default_rng(0)
    rows = ["episode_index,frame_index,success,value,expected_value"]
    for e in range(16):
        success, n = e < 8, (40 if e < 8 else 100)
        t = np.arange(n)
        label = -(n - 1 - t) / 100 - (0 if success else 0.2)
        pred = label + rng.normal(0, 0.02, n) if success else np.full(n, -0.8)
        rows += [
            f"{e},{i},{int(success)},{lab:.6f},{p:.6f}"
            for i, lab, p in zip(t, label, pred, strict=True)
        ]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    synthetic = probe.read(tmp_path / "p.csv")
    blind = probe.scores(synthetic, {e: ep["pred"] for e, ep in synthetic.items()})
    timed = probe.scores(synthetic, probe.cross_fitted(synthetic, 100))
    assert timed["spearman_pooled"] > blind["spearman_pooled"] + 0.1
    # fitted on validation episodes of the same kind (other episode numbers), applied to all of
    # the test ones: the same gain, without fitting on the test split
    val_rows = [rows[0]] + [
        ",".join([str(int(r.split(",")[0]) + 100), *r.split(",")[1:]]) for r in rows[1:]
    ]
    (tmp_path / "val.csv").write_text("\n".join(val_rows) + "\n")
    on_val = probe.fitted(probe.read(tmp_path / "val.csv"), synthetic, 100)
    assert set(on_val) == set(synthetic)
    assert probe.scores(synthetic, on_val)["spearman_pooled"] > blind["spearman_pooled"] + 0.1
    # the command line: a validation file sharing test episodes is refused, a missing column named
    import subprocess
    import sys

    script = str(d / "time_probe.py")
    run = [sys.executable, script, str(tmp_path / "p.csv"), "--horizon", "100", "--fit-on"]
    same = subprocess.run([*run, str(tmp_path / "p.csv")], capture_output=True, text=True)
    assert same.returncode != 0 and "not a held-out fit" in same.stderr
    out = subprocess.run(
        [*run, str(tmp_path / "val.csv")], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)[str(tmp_path / "p.csv")]["with_step_fitted_on_val"][
        "spearman_pooled"
    ] == pytest.approx(probe.scores(synthetic, on_val)["spearman_pooled"])
    with pytest.raises(SystemExit, match="no column 'expected_value_no_step'"):
        probe.read(tmp_path / "p.csv", "expected_value_no_step")


def test_paired_arms_counts_wins_and_losses_on_the_same_seeds(tmp_path) -> None:
    import json

    paired_arms = _experiment_script("paired_arms")

    def arm(name: str, successes: list[bool], seeds: range = range(10, 16)):
        episodes = [
            {"seed": s, "success": ok, "steps": 50 + i if ok else 220}
            for i, (s, ok) in enumerate(zip(seeds, successes, strict=True))
        ]
        (tmp_path / name).write_text(json.dumps({"per_episode": episodes}))
        return paired_arms.episodes(tmp_path / name)

    a = [arm("a0", [True, True, False, False, False, True])]
    b = [arm("b0", [True, False, True, True, True, False])]
    result = paired_arms.paired(a, b)
    assert (result["wins"], result["losses"]) == (3, 2)
    assert result["p_mcnemar"] == pytest.approx(1.0)  # 3 of 5 discordant: no evidence
    assert paired_arms.summary(b) == {"episodes": 6, "successes": 4, "median_success_steps": 52.5}
    with pytest.raises(SystemExit, match="different seeds"):
        paired_arms.paired(a, [arm("c0", [True] * 6, range(20, 26))])
    with pytest.raises(SystemExit, match="pair them one to one"):
        paired_arms.paired(a, b + b)
    # --common-seeds: a longer evaluation cut to the seeds of a shorter one
    longer = [arm("l0", [False] * 4 + [True] * 4, range(10, 18))]
    cut_a, cut_b = paired_arms.common_seeds(a, longer)
    assert cut_a == a and list(cut_b[0]) == list(range(10, 16))
    assert paired_arms.summary(cut_b)["successes"] == 2  # seeds 14 and 15 of the six
    assert paired_arms.paired(cut_a, cut_b) == paired_arms.paired(a, [dict(cut_b[0])])
    with pytest.raises(SystemExit, match="share no evaluation seed"):
        paired_arms.common_seeds(a, [arm("d0", [True] * 2, range(30, 32))])


def test_ranking_counts_the_midpoint_pairs_each_kind_of_failure_loses() -> None:
    """ranking_from_predictions.py's pairs lost by kind of failure: a failure valued above a
    success at their midpoints loses the pair, a tie half of it, and the AUROC with one kind
    ranked rightly adds back just that kind's pairs."""
    ranking = _experiment_script("ranking_from_predictions")

    def episode(mid: float, ok: bool) -> tuple[np.ndarray, np.ndarray, bool]:
        return np.zeros(5), np.array([-0.9, -0.8, mid, -0.2, -0.1]), ok  # midpoint: frame 2

    episodes = {
        0: episode(-0.3, True),
        1: episode(-0.5, True),
        2: episode(-0.2, False),  # above both successes: 2 pairs lost
        3: episode(-0.5, False),  # below one, tied with the other: half a pair
        4: episode(-0.9, False),  # below both
    }
    records = {
        0: {},
        1: {},
        2: {"expert_fault": "wrong_target"},
        3: {"expert_fault": "early_release", "expert_action_noise": 0.2},
        4: {"expert_action_noise": 0.2},
    }
    lost = ranking.pairs_lost_by_fault(episodes, records)
    assert sorted(lost) == ["early_release+noise", "none+noise", "wrong_target"]
    assert lost["wrong_target"] == {
        "failures": 1,
        "pairs": 2,
        "pairs_lost": 2.0,
        "auroc_if_ranked_right": pytest.approx(1 - 0.5 / 6),
    }
    assert lost["early_release+noise"]["pairs_lost"] == 0.5
    assert lost["none+noise"]["pairs_lost"] == 0.0
    # the pairs lost are the AUROC's complement
    mids = [e[1][2] for e in episodes.values()]
    labels = [int(e[2]) for e in episodes.values()]
    from torchmetrics.functional.classification import binary_auroc

    auroc = float(binary_auroc(torch.tensor(mids), torch.tensor(labels)))
    assert auroc == pytest.approx(1 - 2.5 / 6)
    assert lost["none+noise"]["auroc_if_ranked_right"] == pytest.approx(auroc)
