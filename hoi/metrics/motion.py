"""3D motion metrics against ground truth, in metres (camera frame).

Object points are ordered samples of each object's surface (the same index is the same
surface point in every frame), so a per-point distance is meaningful, unlike for free point
clouds where Chamfer distance is the right comparison.
"""

from __future__ import annotations

import torch

from hoi.geometry.hand import JOINTS_PER_HAND
from hoi.geometry.motion import POINTS_PER_OBJECT


def mpjpe(joints: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: (B, N, 42, 3) x 2 -> (B,) metres."""
    return (joints - target).norm(dim=-1).mean(dim=(1, 2))


def point_error(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-point distance: (B, N, P, 3) x 2 -> (B,) metres."""
    return (points - target).norm(dim=-1).mean(dim=(1, 2))


def hand_tool_distance(joints: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """How far the right hand (the tool hand) is from the tool: the distance from each
    right-hand joint to its nearest tool point, minimum over joints, mean over frames.

    joints (B, N, 42, 3), points (B, N, 298, 3) -> (B,) metres; near 0 while grasping."""
    right = joints[..., JOINTS_PER_HAND:, :]
    tool = points[..., :POINTS_PER_OBJECT, :]
    nearest = torch.cdist(right.flatten(0, 1), tool.flatten(0, 1)).amin(dim=(1, 2))
    return nearest.view(joints.shape[:2]).mean(dim=1)
