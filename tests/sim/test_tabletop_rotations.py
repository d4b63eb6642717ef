"""Quaternion / axis-angle helpers the controller and the 8-D state rely on."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from vlaexp.sim.tabletop.rotations import (
    axis_angle_to_quat,
    quat_mul,
    quat_to_axis_angle,
    quat_yaw,
    rotation_error,
    wrap_angle,
    yaw_quat,
)


@pytest.mark.parametrize("seed", range(5))
def test_axis_angle_round_trip_and_mujoco_agreement(seed):
    rotvec = np.random.default_rng(seed).uniform(-1.5, 1.5, 3)
    q = axis_angle_to_quat(rotvec)
    np.testing.assert_allclose(quat_to_axis_angle(q), rotvec, atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle(-q), rotvec, atol=1e-9)  # sign-invariant
    expected = np.zeros(4)
    mujoco.mju_axisAngle2Quat(expected, rotvec / np.linalg.norm(rotvec), np.linalg.norm(rotvec))
    np.testing.assert_allclose(q, expected, atol=1e-12)
    a, b = axis_angle_to_quat(rotvec), axis_angle_to_quat(rotvec[::-1])
    mj = np.zeros(4)
    mujoco.mju_mulQuat(mj, a, b)
    np.testing.assert_allclose(quat_mul(a, b), mj, atol=1e-12)


def test_rotation_error_recovers_the_applied_rotation():
    current = axis_angle_to_quat(np.array([np.pi, 0.0, 0.0]))
    delta = np.array([0.1, -0.2, 0.3])
    target = quat_mul(axis_angle_to_quat(delta), current)
    np.testing.assert_allclose(rotation_error(target, current), delta, atol=1e-9)


def test_yaw_helpers():
    down = np.array([0.0, 1.0, 0.0, 0.0])
    for yaw in (-2.5, -0.3, 0.0, 1.2, 3.0):
        assert quat_yaw(quat_mul(yaw_quat(yaw), down)) == pytest.approx(yaw)
    assert wrap_angle(3 * np.pi / 2) == pytest.approx(-np.pi / 2)
    np.testing.assert_allclose(quat_to_axis_angle(down), [np.pi, 0, 0])
