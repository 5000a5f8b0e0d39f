"""Rotations as (..., 3, 3) numpy matrices: a frame from two directions, and Rodrigues' formula."""

from __future__ import annotations

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def frame(y_dir: np.ndarray, z_ref: np.ndarray) -> np.ndarray:
    """Rotation (..., 3, 3) with columns x, y, z: y along y_dir, z as close to z_ref as allowed."""
    y = unit(np.asarray(y_dir, float))
    z_ref = np.broadcast_to(np.asarray(z_ref, float), y.shape)
    z = unit(z_ref - (z_ref * y).sum(-1, keepdims=True) * y)
    return np.stack([np.cross(y, z), y, z], axis=-1)


def axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations (..., 3, 3) about unit `axis` (..., 3) by `angle` (...)."""
    axis = unit(np.asarray(axis, float))
    angle = np.asarray(angle, float)[..., None, None]
    k = np.zeros(axis.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    k = k - np.swapaxes(k, -1, -2)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
