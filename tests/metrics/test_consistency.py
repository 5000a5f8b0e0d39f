"""Video-motion consistency, penetration and contact stability on hand-built scenes."""

from __future__ import annotations

import math

import pytest
import torch

from hoi.geometry.hand import NUM_JOINTS
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.metrics.consistency import (
    contact_sets,
    contact_stability,
    hand_object_penetration,
    nearest_colour_distance,
    penetration_depths,
    point_spacing,
    surface_normals,
    video_motion_consistency,
)
from hoi.render.motion_video import JOINT_RGB, WRIST_RGB, render_motion_video

FAR = torch.tensor([-1.0, 0.0, 0.0])  # joints parked here touch nothing


def sphere(radius: float = 0.05, centre=(0.0, 0.0, 0.0), count: int = POINTS_PER_OBJECT
           ) -> torch.Tensor:
    """(count, 3) Fibonacci-sphere samples: about 1.5 cm apart for r = 5 cm, 149 points."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / count
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = (1 - z**2).sqrt()
    unit = torch.stack([r * phi.cos(), r * phi.sin(), z], dim=-1)
    return (radius * unit + torch.tensor(centre, dtype=torch.float64)).float()


def scene(frames: int) -> torch.Tensor:
    """Object points (1, frames, 298, 3): tool a 5 cm sphere at the origin, target far away."""
    points = torch.cat([sphere(), sphere(centre=(1.0, 0.0, 0.0))])
    return points[None, None].expand(1, frames, -1, -1).clone()


# ---------------------------------------------------------------------------------------------
# Video-motion consistency
# ---------------------------------------------------------------------------------------------

SIZE, FOCAL = 64, 64.0


def grid_motion(frames: int = 2) -> tuple[torch.Tensor, ...]:
    """Joints on a 7 x 6 grid of pixels 8 px apart at depth 1 m, objects behind the camera
    (not drawn), camera K = diag(64, 64, 1), R = I, T = 0."""
    i = torch.arange(NUM_JOINTS)
    uv = torch.stack([8.0 + 8 * (i % 7), 8.0 + 8 * (i // 7)], dim=-1)
    joints = torch.cat([uv / FOCAL, torch.ones(NUM_JOINTS, 1)], dim=-1)
    joints = joints[None, None].expand(1, frames, -1, -1).clone()
    points = scene(frames) + torch.tensor([0.0, 0.0, -5.0])
    K = torch.diag(torch.tensor([FOCAL, FOCAL, 1.0]))[None]
    return joints, points, K, torch.eye(3)[None], torch.zeros(1, 3)


def test_nearest_colour_distance_hand_computed() -> None:
    video = torch.zeros(1, 1, 20, 20, 3, dtype=torch.uint8)
    video[0, 0, 5, 9] = torch.tensor([200, 160, 120])  # row 5, col 9
    uv = torch.tensor([[[[6.0, 5.0], [9.0, 5.0], [9.0, 9.0], [9.0, 19.0]]]])  # (u, v)
    colours = torch.tensor([[210, 150, 120]] * 4, dtype=torch.uint8)  # within 10 per channel
    d = nearest_colour_distance(video, uv, colours, tolerance=10, max_px=5)[0, 0]
    assert d[:3].tolist() == [3.0, 0.0, 4.0]
    assert d[3].isinf()  # 14 px away: beyond max_px
    assert nearest_colour_distance(video, uv, colours, tolerance=9, max_px=5).isinf().all()


def test_own_render_is_fully_consistent() -> None:
    joints, points, K, R, T = grid_motion()
    video = render_motion_video(joints, points, K, R, T, SIZE, SIZE)
    result = video_motion_consistency(joints, points, K, R, T, video)
    assert result.hit_rate.tolist() == [1.0]
    assert result.pixel_error.tolist() == [0.0]
    black = torch.zeros_like(video)
    result = video_motion_consistency(joints, points, K, R, T, black, max_px=6)
    assert result.hit_rate.tolist() == [0.0]
    assert result.pixel_error.tolist() == [6.0]  # no joint found: the cap


def test_missing_joint_and_shifted_video() -> None:
    joints, points, K, R, T = grid_motion()
    video = render_motion_video(joints, points, K, R, T, SIZE, SIZE)
    uv = joints[..., :2] * FOCAL
    visible = (nearest_colour_distance(video, uv, JOINT_RGB, 0, 0) == 0).sum().item()
    assert visible >= 40  # the grid keeps (nearly) every joint in sight
    erased = video.clone()
    erased[(erased == WRIST_RGB[1]).all(-1)] = 0  # the right wrist disappears in both frames
    result = video_motion_consistency(joints, points, K, R, T, erased, max_px=6)
    assert result.hit_rate.item() == pytest.approx((visible - 2) / visible)
    assert result.pixel_error.item() == pytest.approx(2 * 6 / visible)
    # every joint 3 px down: its 3 x 3 disc's nearest row is 2 px off, a hit only with radius 2
    shifted = torch.zeros_like(video)
    shifted[..., 3:, :, :] = video[..., :-3, :, :]
    result = video_motion_consistency(joints, points, K, R, T, shifted, radius=1, max_px=6)
    assert result.hit_rate.item() == 0.0
    assert result.pixel_error.item() == pytest.approx(2.0)
    result = video_motion_consistency(joints, points, K, R, T, shifted, radius=2, max_px=6)
    assert result.hit_rate.item() == 1.0


def test_joints_out_of_view_do_not_count() -> None:
    joints, points, K, R, T = grid_motion()
    video = render_motion_video(joints, points, K, R, T, SIZE, SIZE)
    moved = joints.clone()
    moved[:, :, 21, 0] = 2.0  # u = 128: outside the 64 px image, so not a miss
    result = video_motion_consistency(moved, points, K, R, T, video)
    assert result.hit_rate.item() == 1.0
    behind = joints.clone()
    behind[..., 2] = -1.0  # every joint behind the camera: nothing to check
    result = video_motion_consistency(behind, points, K, R, T, video)
    assert result.hit_rate.isnan().all() and result.pixel_error.isnan().all()


# ---------------------------------------------------------------------------------------------
# Penetration
# ---------------------------------------------------------------------------------------------


def test_sphere_normals_are_radial() -> None:
    points = sphere()
    normals = surface_normals(points)
    radial = points / points.norm(dim=-1, keepdim=True)
    assert (normals * radial).sum(-1).abs().min().item() > 0.97
    assert point_spacing(points).item() == pytest.approx(0.0145, abs=0.002)


def test_penetration_outside_is_zero_inside_is_depth() -> None:
    points = scene(2)
    joints = FAR.expand(1, 2, NUM_JOINTS, 3).clone()
    joints[0, 0, 5] = torch.tensor([0.0, 0.06, 0.0])  # 1 cm outside the tool
    joints[0, 1, 5] = torch.tensor([0.0, 0.04, 0.0])  # 1 cm inside the tool
    depths = penetration_depths(joints, points)
    assert depths[0, 0].max().item() == 0.0
    assert depths[0, 1, 5].item() == pytest.approx(0.01, abs=0.002)
    assert depths[0, 1].count_nonzero().item() == 1
    result = hand_object_penetration(joints, points)
    assert result.depth.item() == pytest.approx(0.01 / 2, abs=0.001)
    assert result.frame_rate.item() == 0.5


def test_penetration_of_the_target_and_deep_joints() -> None:
    points = scene(1)
    joints = FAR.expand(1, 1, NUM_JOINTS, 3).clone()
    joints[0, 0, 30] = torch.tensor([1.0, 0.0, 0.035])  # 1.5 cm inside the target
    joints[0, 0, 31] = torch.tensor([0.0, 0.005, 0.0])  # 4.5 cm inside the tool
    depths = penetration_depths(joints, points)[0, 0]
    assert depths[30].item() == pytest.approx(0.015, abs=0.003)
    assert depths[31].item() == pytest.approx(0.045, abs=0.005)


def test_no_penetration_above_a_thin_plate() -> None:
    """A 2 mm board sampled on both faces: a point 3 cm above it or below it is outside (the
    normal line has board points on one side only), one between the faces is inside."""
    r = torch.arange(-4, 5) * 0.025  # a 9 x 9 grid 2.5 cm apart on each face
    xy = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).view(-1, 2)
    top, bottom = (torch.cat([xy, torch.full((81, 1), z)], dim=-1) for z in (0.001, -0.001))
    board = torch.cat([top, bottom])[:POINTS_PER_OBJECT]
    points = torch.cat([board, sphere(centre=(1.0, 0.0, 0.0))])[None, None]
    joints = FAR.expand(1, 1, NUM_JOINTS, 3).clone()
    joints[0, 0, 0] = torch.tensor([0.0, 0.0, 0.03])
    joints[0, 0, 1] = torch.tensor([0.02, 0.01, -0.03])
    joints[0, 0, 2] = torch.tensor([0.0, 0.0, 0.0005])
    depths = penetration_depths(joints, points)[0, 0]
    assert depths[:2].tolist() == [0.0, 0.0]
    assert 0 < depths[2].item() < 0.002


# ---------------------------------------------------------------------------------------------
# Contact stability
# ---------------------------------------------------------------------------------------------


def test_contact_stability_hand_computed() -> None:
    """Contact sets {0, 1}, {0, 1}, {1, 2}, {}, {}: IoUs 1, 1/3, 0 and one pair without
    contact (skipped): 4 / 9."""
    points = scene(5)
    joints = FAR.expand(1, 5, NUM_JOINTS, 3).clone()
    touching = torch.tensor([0.0, 0.0, 0.055])  # 5 mm off the tool's surface
    for frame, ids in enumerate([(0, 1), (0, 1), (1, 2)]):
        for j in ids:
            joints[0, frame, j] = touching
    sets = contact_sets(joints, points)
    assert sets[0, :, :3].tolist() == [[True, True, False], [True, True, False],
                                       [False, True, True], [False] * 3, [False] * 3]
    assert sets[..., 3:].sum().item() == 0
    assert contact_stability(joints, points).item() == pytest.approx(4 / 9)


def test_contact_stability_steady_and_without_contact() -> None:
    points = scene(4)
    joints = FAR.expand(2, 4, NUM_JOINTS, 3).clone()
    joints[0, :, 10] = torch.tensor([0.055, 0.0, 0.0])  # clip 0: one joint holds on throughout
    stability = contact_stability(joints, points.expand(2, -1, -1, -1))
    assert stability[0].item() == 1.0
    assert stability[1].isnan()  # clip 1 never touches the tool
