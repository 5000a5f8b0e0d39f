"""Motion metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from hoi.geometry.motion import NUM_POINTS, POINTS_PER_OBJECT
from hoi.metrics.motion import (
    acceleration,
    motion_smoothness,
    mpjpe,
    object_chamfer,
    reprojection_error,
)


def test_mpjpe_identical_and_shifted() -> None:
    joints = torch.randn(2, 5, 42, 3)
    assert mpjpe(joints, joints).tolist() == [0.0, 0.0]
    shift = torch.tensor([0.03, 0.0, 0.04])  # 5 cm
    assert mpjpe(joints + shift, joints).tolist() == pytest.approx([0.05, 0.05])


def test_reprojection_error_hand_computed_and_blind_to_depth() -> None:
    """f = 100 px: a point at depth 0.5 m moved 1 cm sideways moves 100 * 0.01 / 0.5 = 2 px;
    moved along its viewing ray it does not move at all."""
    K = torch.tensor([[100.0, 0.0, 48.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])[None]
    x = torch.tensor([0.05, -0.02, 0.5]).expand(1, 3, 4, 3)
    assert reprojection_error(x + torch.tensor([0.01, 0.0, 0.0]), x, K).item() == \
        pytest.approx(2.0, rel=1e-5)
    assert reprojection_error(1.3 * x, x, K).item() == pytest.approx(0.0, abs=1e-4)


def test_acceleration_is_second_difference() -> None:
    t = torch.arange(5.0)
    x = (t**2)[None, :, None, None].expand(1, 5, 2, 3)  # x = t^2: second difference 2
    assert torch.equal(acceleration(x), torch.full((1, 3, 2, 3), 2.0))


def test_motion_smoothness_hand_computed() -> None:
    """Constant velocities have no acceleration: any two linear motions score 0. Moving frame 2
    by d changes the accelerations centred on frames 1, 2, 3 by d, -2d, d: mean 4d / 3."""
    t = torch.arange(5.0)[None, :, None, None]
    gt = torch.randn(1, 1, 42, 3) + 0.01 * t
    other_line = torch.randn(1, 1, 42, 3) - 0.02 * t
    assert motion_smoothness(other_line, gt).item() == pytest.approx(0.0, abs=1e-6)
    bumped = gt.clone()
    bumped[:, 2] += torch.tensor([0.0, 0.006, 0.008])  # |d| = 0.01
    assert motion_smoothness(bumped, gt).item() == pytest.approx(4 * 0.01 / 3, rel=1e-4)


def _spread_points(seed: int) -> torch.Tensor:
    """(298, 3) points on a grid 0.5 apart: every point's nearest neighbour is far."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(7.0)] * 3, indexing="ij"), -1).view(-1, 3)
    return grid[torch.randperm(len(grid), generator=g)[:NUM_POINTS]] * 0.5


def test_object_chamfer_known_sets() -> None:
    points = _spread_points(0)[None, None].expand(2, 3, -1, -1).clone()
    assert object_chamfer(points, points).tolist() == [0.0, 0.0]
    target = points.clone()
    target[..., :POINTS_PER_OBJECT, 0] += 0.1  # the tool shifted by 0.1 (nearest stays its copy)
    # tool: 0.1^2 each way = 0.02; target: 0; mean over the two objects 0.01
    assert object_chamfer(points, target).tolist() == pytest.approx([0.01, 0.01], rel=1e-5)
    # Chamfer ignores the order of the points, unlike a per-point error
    shuffled = points[..., torch.randperm(POINTS_PER_OBJECT), :]
    shuffled = torch.cat([shuffled, points[..., POINTS_PER_OBJECT:, :]], dim=-2)
    assert object_chamfer(shuffled, points).tolist() == [0.0, 0.0]


def test_object_chamfer_averages_frames() -> None:
    points = _spread_points(1)[None, None].expand(1, 2, -1, -1).clone()
    target = points.clone()
    target[:, 1, POINTS_PER_OBJECT:, 2] -= 0.2  # only frame 1's target: 0.08 there
    assert object_chamfer(points, target).item() == pytest.approx(0.08 / 2 / 2, rel=1e-5)
