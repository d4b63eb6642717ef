"""Quaternion and axis-angle conversions (MuJoCo's w, x, y, z quaternion order).

All functions take and return float64 numpy arrays: quaternions are ``[4]`` (w, x, y, z),
rotation vectors are ``[3]`` (unit axis times angle in radians).
"""

from __future__ import annotations

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of two quaternions ``[4]`` (rotate by ``b``, then ``a``)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion ``[4]``."""
    return np.array([q[0], -q[1], -q[2], -q[3]])


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[4]`` of a rotation vector ``[3]``."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = np.asarray(rotvec, dtype=np.float64) / angle
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """Rotation vector ``[3]`` of a quaternion ``[4]``, angle in ``[0, pi]`` (w made >= 0).

    This is robosuite's ``quat2axisangle``, which LIBERO's 8-D state uses for orientation.
    """
    q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    sin_half = float(np.linalg.norm(q[1:]))
    if sin_half < 1e-12:
        return np.zeros(3)
    angle = 2.0 * np.arctan2(sin_half, q[0])
    return q[1:] / sin_half * angle


def rotation_error(q_target: np.ndarray, q_current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector ``[3]`` r with ``quat(r) * q_current == q_target``."""
    return quat_to_axis_angle(quat_mul(q_target, quat_conj(q_current)))


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion ``[4]`` of a rotation by ``yaw`` radians about the world z axis."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(q: np.ndarray) -> float:
    """Heading of the body x axis in the world xy plane, radians, for a quaternion ``[4]``."""
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def wrap_angle(angle: float) -> float:
    """``angle`` wrapped into ``[-pi, pi)``."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)
