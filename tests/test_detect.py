"""Conformal failure alarms: windowing, calibration, alarms, metrics, AUROC and grid search."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from vlaexp.uncertainty.detect import (
    ConstantThreshold,
    Threshold,
    TimeVaryingThreshold,
    calibrate,
    conformal_quantile,
    detection_metrics,
    episode_auroc,
    first_alarm,
    select_window_and_q,
    threshold_from_dict,
    windowed,
)


def test_windowed_is_a_causal_mean_defined_from_step_zero() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    np.testing.assert_allclose(windowed(x, 1), x)
    np.testing.assert_allclose(windowed(x, 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(windowed(x, 3), [1.0, 1.5, 2.0, 3.0, 4.0])
    # A window longer than the series is the running mean.
    np.testing.assert_allclose(windowed(x, 10), [1.0, 1.5, 2.0, 2.5, 3.0])


def test_conformal_quantile_is_the_ceil_n_plus_one_q_order_statistic() -> None:
    values = np.array([5, 3, 9, 1, 7, 2, 8, 4, 6], dtype=float)  # 1..9, shuffled
    assert conformal_quantile(values, 0.9) == 9.0  # ceil(10 * 0.9) = 9
    assert conformal_quantile(values, 0.5) == 5.0  # ceil(10 * 0.5) = 5
    assert conformal_quantile(values, 0.7) == 7.0  # 10 * 0.7 is 7.000000000000001 in floats
    assert conformal_quantile(values, 0.95) == math.inf  # ceil(9.5) = 10 > 9 values
    assert conformal_quantile([4.0], 0.4) == 4.0  # ceil(2 * 0.4) = 1


def test_constant_threshold_is_the_quantile_of_windowed_maxima() -> None:
    # window 2 -> windowed maxima 1, 2, 4
    calib = [np.array([0.0, 2.0, 0.0, 0.0]), np.array([1.0, 1.0, 3.0]), np.array([4.0, 0.0])]
    th = calibrate("constant", calib, window=2, q=0.5)  # k = ceil(4 * 0.5) = 2
    assert isinstance(th, ConstantThreshold)
    assert (th.window, th.q, th.value) == (2, 0.5, 2.0)
    np.testing.assert_array_equal(th.at(3), [2.0, 2.0, 2.0])
    assert calibrate("constant", calib, window=2, q=0.75).value == 4.0  # k = 3
    assert calibrate("constant", calib, window=2, q=0.8).value == math.inf  # k = 4 > 3


def test_time_varying_threshold_uses_episodes_still_running_and_extends_the_last_value() -> None:
    # window 2 -> [1, 3, 3.5], [3, 2], [2, 2, 3, 5.5]
    calib = [np.array([1.0, 5.0, 2.0]), np.array([3.0, 1.0]), np.array([2.0, 2.0, 4.0, 7.0])]
    th = calibrate("time_varying", calib, window=2, q=0.5)
    assert isinstance(th, TimeVaryingThreshold)
    # t=0: {1,3,2} k=2 -> 2; t=1: {3,2,2} -> 2; t=2: {3.5,3} k=2 -> 3.5; t=3: {5.5} k=1 -> 5.5
    np.testing.assert_array_equal(th.values, [2.0, 2.0, 3.5, 5.5])
    np.testing.assert_array_equal(th.at(2), [2.0, 2.0])
    np.testing.assert_array_equal(th.at(6), [2.0, 2.0, 3.5, 5.5, 5.5, 5.5])
    # q=0.6: t=0 k=ceil(2.4)=3 -> 3; t=1 -> 3; t=2 k=ceil(1.8)=2 -> 3.5; t=3 k=ceil(1.2)=2 > 1 -> inf
    th6 = calibrate("time_varying", calib, window=2, q=0.6)
    np.testing.assert_array_equal(th6.at(5), [3.0, 3.0, 3.5, math.inf, math.inf])


def test_first_alarm_needs_the_windowed_score_strictly_above_threshold() -> None:
    th = ConstantThreshold(window=1, q=0.9, value=2.0)
    assert first_alarm([1.0, 2.0, 2.0, 1.0], th) is None
    assert first_alarm([1.0, 2.0, 2.0001, 9.0], th) == 2
    th2 = ConstantThreshold(window=2, q=0.9, value=2.0)
    assert first_alarm([0.0, 4.0, 0.0], th2) is None  # windowed [0, 2, 2]
    assert first_alarm([0.0, 4.0, 0.1], th2) == 2  # windowed [0, 2, 2.05]
    tv = TimeVaryingThreshold(window=1, q=0.5, values=np.array([5.0, 1.0]))
    assert first_alarm([3.0, 1.0, 1.5], tv) == 2  # step 2 reuses the last value, 1.0


def _constructed_set() -> tuple[list[np.ndarray], list[bool]]:
    spike = np.zeros(10)
    spike[3] = 5.0
    late = np.zeros(10)
    late[5:] = 2.0
    scores = [np.zeros(10), np.zeros(10), np.zeros(10), spike, late, np.zeros(10)]
    success = [True, True, True, True, False, False]
    return scores, success


def test_detection_metrics_on_a_constructed_set() -> None:
    scores, success = _constructed_set()
    th = ConstantThreshold(window=1, q=0.9, value=1.0)
    m = detection_metrics(scores, success, th)
    assert (m["n_tp"], m["n_fn"], m["n_tn"], m["n_fp"], m["n_episodes"]) == (1, 1, 3, 1, 6)
    assert m["TPR"] == pytest.approx(0.5)
    assert m["TNR"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(0.625)
    assert m["detection_time"] == pytest.approx(0.5)  # alarm at step 5 of 10
    # 1/2 * ((1 - 0.5) / 2 failures + 3 / 4 successes)
    assert m["TWA"] == pytest.approx(0.5)
    # FIPER's code normalizes by (max_episode_length - 1): 5 / 20
    mh = detection_metrics(scores, success, th, horizon=21)
    assert mh["detection_time"] == pytest.approx(0.25)
    assert mh["TWA"] == pytest.approx(0.5 * (0.75 / 2 + 0.75))
    assert mh["balanced_accuracy"] == pytest.approx(0.625)


def test_detection_time_is_relative_to_each_episodes_length() -> None:
    long_fail = np.zeros(20)
    long_fail[5:] = 2.0
    short_fail = np.array([0.0, 0.0, 3.0, 3.0])
    th = ConstantThreshold(window=1, q=0.9, value=1.0)
    m = detection_metrics([long_fail, short_fail, np.zeros(7)], [False, False, True], th)
    assert m["detection_time"] == pytest.approx((5 / 20 + 2 / 4) / 2)
    assert m["TWA"] == pytest.approx(0.5 * ((1 - 0.25) + (1 - 0.5)) / 2 + 0.5 * 1.0)


def test_detection_metrics_are_nan_where_a_class_is_missing() -> None:
    th = ConstantThreshold(window=1, q=0.9, value=1.0)
    only_succ = detection_metrics([np.zeros(5), np.full(5, 2.0)], [True, True], th)
    assert only_succ["TNR"] == pytest.approx(0.5)
    for key in ("TPR", "balanced_accuracy", "TWA", "detection_time"):
        assert math.isnan(only_succ[key]), key
    only_fail = detection_metrics([np.zeros(5), np.full(5, 2.0)], [False, False], th)
    assert only_fail["TPR"] == pytest.approx(0.5)
    assert only_fail["detection_time"] == pytest.approx(0.0)
    for key in ("TNR", "balanced_accuracy", "TWA"):
        assert math.isnan(only_fail[key]), key


def test_detection_metrics_rejects_mismatched_or_short_horizon() -> None:
    th = ConstantThreshold(window=1, q=0.9, value=1.0)
    with pytest.raises(ValueError, match="2 score series but 1"):
        detection_metrics([np.zeros(3), np.zeros(3)], [True], th)
    with pytest.raises(ValueError, match=r"horizon.*got 2"):
        detection_metrics([np.zeros(3)], [True], th, horizon=2)


def test_episode_auroc() -> None:
    succ = [np.array([0.0, 1.0, 0.0]), np.array([0.5, 0.5])]
    fail = [np.array([0.0, 2.0]), np.array([3.0, 0.0, 0.0])]
    flags = [True, True, False, False]
    assert episode_auroc(succ + fail, flags, window=1) == pytest.approx(1.0)
    same = [np.array([1.0, 0.0])] * 4
    assert episode_auroc(same, flags, window=1) == pytest.approx(0.5)
    assert math.isnan(episode_auroc(succ, [True, True], window=1))
    # Maxima: successes 1, 3; failures 2, 4 -> 3 of 4 (failure, success) pairs ordered right.
    mixed = [np.array([1.0]), np.array([3.0]), np.array([2.0]), np.array([4.0])]
    assert episode_auroc(mixed, flags, window=1) == pytest.approx(0.75)
    # Large scores would saturate a sigmoid into ties; the order must survive.
    big = [np.array([100.0]), np.array([150.0]), np.array([200.0]), np.array([300.0])]
    assert episode_auroc(big, flags, window=1) == pytest.approx(1.0)
    # The window matters: a one-step spike (success) vs a sustained rise (failure).
    spike, sustained = np.array([0.0, 0.0, 6.0, 0.0]), np.array([0.0, 2.5, 2.5, 2.5])
    assert episode_auroc([spike, sustained], [True, False], window=1) == pytest.approx(0.0)
    assert episode_auroc([spike, sustained], [True, False], window=3) == pytest.approx(1.0)


def _spike(length: int, at: int, height: float) -> np.ndarray:
    x = np.zeros(length)
    x[at] = height
    return x


def _sustained(length: int, start: int, level: float) -> np.ndarray:
    x = np.zeros(length)
    x[start:] = level
    return x


def test_select_window_and_q_picks_the_separating_window_from_validation_data() -> None:
    # Successes have one-step spikes of 3 late in the episode; failures a sustained 1.5.
    calib = [_spike(12, 8 + i % 4, 3.0) for i in range(9)]
    val_scores = [
        _spike(12, 9, 3.0),
        _spike(12, 10, 3.0),
        _sustained(12, 4, 1.5),
        _sustained(12, 5, 1.5),
    ]
    val_success = [True, True, False, False]
    args = (calib, val_scores, val_success, [1, 2, 4, 8], [0.5, 0.8])
    before = copy.deepcopy(args)
    best, table = select_window_and_q(*args, kind="constant")
    # Windows 1 and 2 cannot tell a 1.5 plateau from a 3 spike (thresholds 3 and 1.5, strict >).
    # Windows 4 and 8 separate perfectly; ties go to the smaller window, then the larger q.
    assert best == (4, 0.8)
    assert len(table) == 8
    by_key = {(row["window"], row["q"]): row for row in table}
    assert by_key[(1, 0.5)]["balanced_accuracy"] == pytest.approx(0.5)
    assert by_key[(2, 0.8)]["balanced_accuracy"] == pytest.approx(0.5)
    assert by_key[(4, 0.5)]["balanced_accuracy"] == pytest.approx(1.0)
    assert by_key[(8, 0.8)]["balanced_accuracy"] == pytest.approx(1.0)
    # Pure function of its arguments: inputs untouched and the answer reproducible.
    for got, want in zip(args, before, strict=True):
        np.testing.assert_array_equal(
            np.concatenate([np.ravel(x) for x in got]), np.concatenate([np.ravel(x) for x in want])
        )
    assert select_window_and_q(*args, kind="constant") == (best, table)
    # Different validation failures (brief high spikes) change the choice to window 1.
    spiky = [_spike(12, 9, 3.0), _spike(12, 10, 3.0), _spike(12, 6, 5.0), _spike(12, 7, 5.0)]
    best_spiky, _ = select_window_and_q(
        calib, spiky, val_success, [1, 2, 4, 8], [0.5, 0.8], "constant"
    )
    assert best_spiky == (1, 0.8)
    # Per-step thresholds are 0 before any calibration spike, so with q=0.8 every window alarms at
    # the plateau's first step (4 and 5 of 12) and none on the successes: TWA ties at
    # 1/2 * ((1 - 4/12) + (1 - 5/12)) / 2 + 1/2 and the smallest window wins. At q=0.5, windows
    # 1 and 2 alarm on the success spikes.
    best_tv, table_tv = select_window_and_q(*args, kind="time_varying", metric="TWA")
    assert best_tv == (1, 0.8)
    twa = {(row["window"], row["q"]): row["TWA"] for row in table_tv}
    assert twa[(1, 0.8)] == pytest.approx(0.8125)
    assert twa[(1, 0.5)] == pytest.approx(0.3125)


def test_select_window_and_q_errors() -> None:
    calib = [np.zeros(4)] * 3
    with pytest.raises(ValueError, match="'detection_time'"):
        select_window_and_q(
            calib, calib, [True] * 3, [1], [0.5], "constant", metric="detection_time"
        )
    with pytest.raises(ValueError, match="NaN for every"):
        select_window_and_q(calib, calib, [True] * 3, [1], [0.5], "constant")
    with pytest.raises(ValueError, match="at least one window"):
        select_window_and_q(calib, calib, [True] * 3, [], [0.5], "constant")


def test_invalid_arguments_name_the_offending_value() -> None:
    calib = [np.zeros(4), np.ones(3)]
    with pytest.raises(ValueError, match=r"window.*got 0"):
        windowed([1.0, 2.0], 0)
    with pytest.raises(ValueError, match=r"window.*got 0"):
        calibrate("constant", calib, window=0, q=0.5)
    with pytest.raises(ValueError, match=r"q .*got 1\.0"):
        calibrate("constant", calib, window=1, q=1.0)
    with pytest.raises(ValueError, match=r"q .*got 0\.0"):
        conformal_quantile([1.0], 0.0)
    with pytest.raises(ValueError, match="got 0"):
        calibrate("time_varying", [], window=1, q=0.5)
    with pytest.raises(ValueError, match=r"'banana'.*constant.*time_varying"):
        calibrate("banana", calib, window=1, q=0.5)
    with pytest.raises(ValueError, match="empty"):
        windowed([], 3)


def test_thresholds_round_trip_through_json() -> None:
    calib = [np.array([1.0, 5.0, 2.0]), np.array([3.0, 1.0]), np.array([2.0, 2.0, 4.0, 7.0])]
    for th in (
        calibrate("constant", calib, window=2, q=0.5),
        calibrate("time_varying", calib, window=2, q=0.6),  # ends in +inf
        ConstantThreshold(window=3, q=0.95, value=math.inf),
    ):
        assert isinstance(th, Threshold)
        d = json.loads(json.dumps(th.to_dict()))
        assert set(d) == {"kind", "window", "q", "values"}
        back = threshold_from_dict(d)
        assert type(back) is type(th)
        assert (back.kind, back.window, back.q) == (th.kind, th.window, th.q)
        np.testing.assert_array_equal(back.at(7), th.at(7))
        assert type(th).from_dict(d).to_dict() == th.to_dict()
    with pytest.raises(ValueError, match="expected kind 'constant'"):
        ConstantThreshold.from_dict(
            {"kind": "time_varying", "window": 1, "q": 0.5, "values": [1.0]}
        )
    with pytest.raises(ValueError, match="'nope'"):
        threshold_from_dict({"kind": "nope"})


def test_too_few_calibration_successes_warn_that_no_alarm_can_fire(caplog) -> None:
    from vlaexp.uncertainty.detect import min_calibration_episodes

    assert [min_calibration_episodes(q) for q in (0.5, 0.9, 0.95)] == [1, 9, 19]
    for n in (18, 19):  # the conformal quantile is finite from n = 19 on at q = 0.95
        caplog.clear()
        scores = [np.full(5, float(i)) for i in range(n)]
        threshold = calibrate("constant", scores, window=1, q=0.95)
        assert np.isinf(threshold.value) == (n == 18)
        warned = "cannot set a level-0.95 threshold (it needs >= 19)" in caplog.text
        assert warned == (n == 18)
