"""The motion video: where and in which colour each part lands, occlusion, robustness, batching."""

from __future__ import annotations

import pytest
import torch

from hoi.geometry.hand import FINGERS
from hoi.render.motion_video import (
    BONE_RGB,
    BONES,
    FINGER_RGB,
    JOINT_RGB,
    POINT_RGB,
    TARGET_RGB,
    TOOL_RGB,
    render_motion_video,
    stamp_radii,
)
from tests.render.scene import FAR_BEHIND, identity_camera, table_camera, two_hands

H, W = 48, 64
CAMERA = identity_camera(focal=100.0, cx=32.0, cy=24.0)  # u = 100 x / z + 32, v = 100 y / z + 24


def nothing() -> tuple[torch.Tensor, torch.Tensor]:
    """Joints (1, 1, 42, 3) and points (1, 1, 298, 3), all behind the camera."""
    return torch.full((1, 1, 42, 3), FAR_BEHIND), torch.full((1, 1, 298, 3), FAR_BEHIND)


def render(joints: torch.Tensor, points: torch.Tensor, camera=CAMERA, height=H, width=W):
    return render_motion_video(joints, points, *camera, height, width)


def test_palette_tells_hands_fingers_and_objects_apart():
    colours = torch.cat([FINGER_RGB.flatten(0, 1), JOINT_RGB, TOOL_RGB[None], TARGET_RGB[None]])
    # 10 bone colours, per hand a wrist and 5 finger tints (4 joints each), tool, target
    assert len(torch.unique(colours, dim=0)) == 10 + 2 * 6 + 2
    assert len(torch.unique(BONE_RGB, dim=0)) == 10
    assert (POINT_RGB[:149] == TOOL_RGB).all() and (POINT_RGB[149:] == TARGET_RGB).all()
    assert (colours.int().sum(-1) > 0).all()  # nothing is drawn black on black


@pytest.mark.parametrize("joint", [17, 21 + 16])  # left index tip, right thumb tip
def test_joint_lands_in_the_hand_computed_pixel_with_its_colour(joint):
    joints, points = nothing()
    joints[0, 0, joint] = torch.tensor([0.1, -0.05, 1.0])  # u = 42, v = 19
    frame = render(joints, points)[0, 0]
    # joints are never thinner than 3 x 3 px; bones and points are single pixels at this height
    assert stamp_radii(H) == (1, 0, 0)
    drawn = frame.any(-1).nonzero()
    assert drawn.amin(0).tolist() == [18, 41] and drawn.amax(0).tolist() == [20, 43]
    assert len(drawn) == 9 and (frame[18:21, 41:44] == JOINT_RGB[joint]).all()


def test_bone_is_drawn_between_its_joints_in_its_finger_colour():
    joints, points = nothing()
    bone = 1  # left index MCP (1) -> PIP (2)
    parent, child, hand, finger = BONES[bone].tolist()
    assert (hand, FINGERS[finger]) == (0, "index")
    joints[0, 0, parent] = torch.tensor([-0.2, 0.0, 1.0])  # (12, 24)
    joints[0, 0, child] = torch.tensor([0.2, 0.0, 1.0])  # (52, 24)
    frame = render(joints, points)[0, 0]
    row = frame[24, 11:54]
    assert (row[:3] == JOINT_RGB[parent]).all() and (row[-3:] == JOINT_RGB[child]).all()
    assert (row[3:-3] == FINGER_RGB[0, 1]).all()  # no gap, bone colour all along
    assert frame.any(-1).sum() == 2 * 9 + len(row) - 6  # two 3 x 3 discs, a 1 px bone


@pytest.mark.parametrize("tool_depth,target_depth,winner", [(1.0, 2.0, TOOL_RGB),
                                                            (2.0, 1.0, TARGET_RGB)])
def test_nearer_splat_hides_farther_one(tool_depth, target_depth, winner):
    joints, points = nothing()
    # Both project to pixel (24, 32), whatever the depth.
    points[0, 0, 0] = torch.tensor([0.0, 0.0, tool_depth])
    points[0, 0, 200] = torch.tensor([0.0, 0.0, target_depth])
    assert render(joints, points)[0, 0, 24, 32].tolist() == winner.tolist()


def test_nearer_joint_hides_bone_behind_it():
    joints, points = nothing()
    joints[0, 0, 0] = torch.tensor([-0.2, 0.0, 1.0])  # left wrist -> index MCP, across row 24
    joints[0, 0, 1] = torch.tensor([0.2, 0.0, 1.0])
    joints[0, 0, 21 + 5] = torch.tensor([0.0, 0.0, 0.5])  # right middle PIP in front, (24, 32)
    points[0, 0, 0] = torch.tensor([0.0, 0.0, 3.0])  # a tool point behind both
    frame = render(joints, points)[0, 0]
    assert frame[24, 32].tolist() == JOINT_RGB[21 + 5].tolist()


def test_nothing_behind_the_camera_or_outside_the_image_is_drawn():
    joints, points = nothing()
    joints[0, 0, :4] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [50.0, 0.0, 1.0],
                                     [0.0, -1e6, 1.0]])  # on, behind, right of, above
    joints[0, 0, 4] = torch.tensor([0.0, 0.0, 1e-9])  # all but on the camera plane
    points[0, 0, :3] = torch.tensor([[0.0, 0.0, -1.0], [-9.0, 9.0, 1.0], [1e9, 1e9, 1e-3]])
    frame = render(joints, points)
    assert frame.dtype == torch.uint8 and frame.shape == (1, 1, H, W, 3)
    assert not frame.any()


def test_bone_leaving_the_image_is_clipped_not_dropped():
    joints, points = nothing()
    joints[0, 0, 13] = torch.tensor([0.0, 0.0, 1.0])  # left thumb base at (24, 32)
    joints[0, 0, 14] = torch.tensor([1e4, 0.0, 1.0])  # far to the right
    frame = render(joints, points)[0, 0]
    assert (frame[24, 34:] == FINGER_RGB[0, 0]).all()  # past the joint's 3 x 3 disc


def test_sizes_scale_with_image_height():
    assert stamp_radii(416) == (3, 1, 1)
    joints, points = nothing()
    joints[0, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    frame = render(joints, points, identity_camera(400.0, 312.0, 208.0), 416, 624)[0, 0]
    assert frame.any(-1).sum() == 37  # pixels within 3.5 px of the centre


def test_batch_equals_items_rendered_one_by_one():
    generator = torch.Generator().manual_seed(0)
    K, R, T = (torch.cat([x, x]) for x in table_camera(H, W))
    T[1] += torch.tensor([0.02, -0.01, 0.05])  # a second, different camera
    joints = torch.from_numpy(two_hands()).float().expand(2, 3, 42, 3).clone()
    joints += 0.01 * torch.randn(joints.shape, generator=generator)
    points = 0.1 * torch.randn(2, 3, 298, 3, generator=generator) + torch.tensor([0, 0.05, 0.1])
    batch = render_motion_video(joints, points, K, R, T, H, W)
    assert batch.any()
    for b in range(2):
        for n in range(3):
            one = render_motion_video(joints[b:b + 1, n:n + 1], points[b:b + 1, n:n + 1],
                                      K[b:b + 1], R[b:b + 1], T[b:b + 1], H, W)
            assert torch.equal(one[0, 0], batch[b, n])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu():
    K, R, T = table_camera(416, 624)
    joints = torch.from_numpy(two_hands()).float()[None, None]
    points = 0.1 * torch.randn(1, 1, 298, 3) + torch.tensor([0, 0.05, 0.1])
    cpu = render_motion_video(joints, points, K, R, T, 416, 624)
    gpu = render_motion_video(*(x.cuda() for x in (joints, points, K, R, T)), 416, 624)
    assert gpu.is_cuda and (gpu.cpu() != cpu).any(-1).float().mean() < 1e-3  # rounding only
