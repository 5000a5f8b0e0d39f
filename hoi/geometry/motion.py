"""Layout of a 3D motion frame: 42 hand joints and 298 object points (SPEC section 1).

Points 0-148 are the tool, 149-297 the target object. Arrays are (..., N, 42, 3) for joints
and (..., N, 298, 3) for points, in metres, in the world frame of the clip's camera.

The diffusion models see a motion as one tensor (..., N, 340, 3): joints then points, in the
clip's *camera* frame (so that `Proj` needs only the intrinsics), centred and scaled to unit
range by `normalize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hoi.geometry.hand import NUM_JOINTS

POINTS_PER_OBJECT = 149
NUM_POINTS = 2 * POINTS_PER_OBJECT
NUM_ENTITIES = NUM_JOINTS + NUM_POINTS
OBJECTS = ("tool", "target")


def pack(joints: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(..., N, 42, 3), (..., N, 298, 3) -> (..., N, 340, 3)."""
    return torch.cat([joints, points], dim=-2)


def unpack(motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N, 340, 3) -> joints (..., N, 42, 3), points (..., N, 298, 3)."""
    return motion[..., :NUM_JOINTS, :], motion[..., NUM_JOINTS:, :]


def to_camera(x: torch.Tensor, R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """World (B, N, P, 3) -> camera frame with one camera per clip, R (B, 3, 3), T (B, 3)."""
    return x @ R.transpose(-1, -2)[:, None] + T[:, None, None]


def normalize(x: torch.Tensor, center: Sequence[float], scale: float) -> torch.Tensor:
    """Camera-frame metres -> diffusion units: (x - center) / scale."""
    return (x - x.new_tensor(center)) / scale


def denormalize(x: torch.Tensor, center: Sequence[float], scale: float) -> torch.Tensor:
    """Diffusion units -> camera-frame metres."""
    return x * scale + x.new_tensor(center)


__all__ = ["NUM_ENTITIES", "NUM_JOINTS", "NUM_POINTS", "OBJECTS", "POINTS_PER_OBJECT",
           "denormalize", "normalize", "pack", "to_camera", "unpack"]
