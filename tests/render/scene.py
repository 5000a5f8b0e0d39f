"""Hand-placed scenes for the render tests: cameras, flat hands and spheres of surfels."""

from __future__ import annotations

import numpy as np
import torch

from hoi.geometry.camera import intrinsics, look_at
from hoi.geometry.hand import FINGER_JOINTS, JOINTS_PER_HAND

FAR_BEHIND = -5.0  # camera z of whatever a test does not want drawn


def table_camera(height: int, width: int) -> tuple[torch.Tensor, ...]:
    """(K, R, T), batch of one, of a camera in front of the table looking down at it."""
    K = intrinsics(height, width, fov_y_deg=50.0)
    R, T = look_at(np.array([0.0, -0.45, 0.40]), np.array([0.0, 0.0, 0.05]))
    return tuple(torch.from_numpy(x)[None] for x in (K, R, T))


def identity_camera(focal: float, cx: float, cy: float) -> tuple[torch.Tensor, ...]:
    """(K, R, T), batch of one, of a camera at the world origin looking along +z: world
    coordinates are camera coordinates, so pixels can be computed by hand."""
    K = torch.tensor([[[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]]])
    return K, torch.eye(3)[None], torch.zeros(1, 3)


def flat_hand(wrist: tuple[float, float, float], mirror: bool = False) -> np.ndarray:
    """(21, 3) joints of a flat, open hand parallel to the table (fingers along +y, thumb
    towards +x, or -x when mirrored), wrist at `wrist`."""
    joints = np.zeros((JOINTS_PER_HAND, 3))
    base = {"thumb": (0.025, 0.02), "index": (0.022, 0.085), "middle": (0.0, 0.09),
            "ring": (-0.02, 0.085), "pinky": (-0.038, 0.075)}
    for finger, chain in FINGER_JOINTS.items():
        x, y = base[finger]
        step = np.array([0.025, 0.02]) if finger == "thumb" else np.array([0.15 * x, 0.03])
        for k, joint in enumerate(chain):
            joints[joint, :2] = np.array([x, y]) + k * step
    if mirror:
        joints[:, 0] *= -1
    return joints + np.asarray(wrist)


def two_hands(z: float = 0.08) -> np.ndarray:
    """(42, 3) a left and a right flat hand side by side above the table."""
    return np.concatenate([flat_hand((0.1, -0.05, z), mirror=True),
                           flat_hand((-0.1, -0.05, z))])


def sphere(centre: tuple[float, float, float], radius: float, n: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(surfels (n, 3), outward normals (n, 3)) evenly spread on a sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    normals = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth),
                        np.cos(polar)], -1)
    return np.asarray(centre) + radius * normals, normals
