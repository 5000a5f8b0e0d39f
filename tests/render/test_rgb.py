"""RGB frames: agreement with the motion video, occlusion, shading, the table, batching."""

from __future__ import annotations

import numpy as np
import torch

from hoi.geometry.camera import project
from hoi.render.motion_video import BONE_RGB, JOINT_RGB, TARGET_RGB, TOOL_RGB, render_motion_video
from hoi.render.rgb import render_rgb
from tests.render.scene import FAR_BEHIND, identity_camera, sphere, table_camera, two_hands

SKIN, OBJECT = (0.1, 0.9, 0.1), (0.1, 0.2, 0.9)  # green hands, blue objects ...
TABLE, WALL = ((0.8, 0.2, 0.1), (0.5, 0.15, 0.1)), (0.6, 0.3, 0.3)  # ... on a red background


def rgb(joints: np.ndarray, surfels: np.ndarray, normals: np.ndarray, camera, height: int,
        width: int, pattern: int = 0) -> torch.Tensor:
    """Render one clip of N frames: joints (N, 42, 3), surfels/normals (N, S, 3) -> (N, H, W, 3)."""
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]  # noqa: E731
    surfel_rgb = t(np.tile(OBJECT, (surfels.shape[1], 1)))
    return render_rgb(t(joints), t(surfels), t(normals), surfel_rgb, t(SKIN), t(TABLE),
                      t(WALL), torch.tensor([pattern]), *camera, height, width)[0]


def dominant(frame: torch.Tensor, channel: int) -> torch.Tensor:
    """(H, W) bool: where `channel` is brighter than both others."""
    others = [c for c in range(3) if c != channel]
    return (frame[..., channel] > frame[..., others[0]]) & (frame[..., channel] > frame[..., others[1]])


def is_colour(frame: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: where the frame shows one of colours (C, 3)."""
    return (frame[:, :, None] == colours).all(-1).any(-1)


def test_rgb_covers_every_pixel_the_motion_video_draws():
    height, width = 416, 624
    camera = table_camera(height, width)
    joints = two_hands()[None]
    surfels, normals = sphere((0.0, 0.25, 0.06), 0.05, 3000)
    points = np.concatenate([surfels[::20][:149], surfels[10::20][:149]])[None]
    motion = render_motion_video(torch.tensor(joints[None], dtype=torch.float32),
                                 torch.tensor(points[None], dtype=torch.float32), *camera,
                                 height, width)[0, 0]
    frame = rgb(joints, surfels[None], normals[None], camera, height, width)[0]
    hand = is_colour(motion, torch.cat([JOINT_RGB, BONE_RGB]))
    assert hand.sum() > 500 and is_colour(motion, torch.stack([TOOL_RGB, TARGET_RGB])).any()
    assert dominant(frame, 1)[hand].all()  # every joint and bone pixel shows skin
    # Object points are splats 3 px wide, wider than the surface at its silhouette: check the
    # pixels they land in (none is behind a hand here).
    uv, _ = project(torch.tensor(points[0], dtype=torch.float32), *(x[0] for x in camera))
    col, row = uv.round().long().T
    assert dominant(frame, 2)[row, col].all()
    assert dominant(frame, 0)[(motion == 0).all(-1)].float().mean() > 0.8  # background


def test_nearer_hides_farther_in_both_orders():
    camera = identity_camera(focal=120.0, cx=31.5, cy=23.5)  # no table in view: a wall
    surfels, normals = sphere((0.0, 0.0, 0.0), 0.03, 800)
    for hand_depth, sphere_depth, channel in ((0.5, 0.8, 1), (0.8, 0.5, 2)):
        joints = np.full((1, 42, 3), FAR_BEHIND)
        joints[0, :21] = (0.0, 0.0, hand_depth)  # a fist-sized ball of a hand
        frame = rgb(joints, surfels[None] + (0.0, 0.0, sphere_depth), normals[None], camera,
                    48, 64)[0]
        assert dominant(frame, channel)[22:26, 30:34].all()  # around the centre (23.5, 31.5)


def test_sides_facing_the_light_are_brighter():
    height, width = 416, 624
    camera = table_camera(height, width)
    centre = np.array([0.0, 0.0, 0.1])
    top, low_front = np.array([0.0, 0.0, 1.0]), np.array([0.0, -0.95, -0.31])  # both in view
    surfels, normals = sphere(centre, 0.05, 4000)
    joints = np.full((1, 42, 3), FAR_BEHIND)
    joints[0, :21] = centre + (0.15, 0.0, 0.0)  # the hand: a ball (the wrist's sphere)
    frame = rgb(joints, surfels[None], normals[None], camera, height, width)[0].float()
    for c, r in ((centre, 0.05), (centre + (0.15, 0.0, 0.0), 0.016)):
        world = torch.tensor(np.stack([c + 0.98 * r * top, c + 0.98 * r * low_front]))
        uv, _ = project(world.float(), *(x[0] for x in camera))
        (u0, v0), (u1, v1) = uv.round().long().tolist()
        assert frame[v0, u0].sum() > 1.5 * frame[v1, u1].sum()


def test_table_pattern_shrinks_with_distance():
    height, width = 416, 624
    nothing = np.full((1, 42, 3), FAR_BEHIND)
    frame = rgb(nothing, np.zeros((1, 0, 3)), np.zeros((1, 0, 3)), table_camera(height, width),
                height, width, pattern=0)[0]
    edges = lambda row: int((frame[row, 1:] != frame[row, :-1]).any(-1).sum())  # noqa: E731
    assert edges(height // 2) > edges(height - 1) >= 8  # more, narrower squares farther away


def test_nothing_drawn_when_everything_is_behind_the_camera_or_out_of_view():
    height, width = 48, 64
    camera = table_camera(height, width)
    surfels, normals = sphere((0.0, 0.0, 0.05), 0.05, 500)
    behind = rgb(np.full((1, 42, 3), FAR_BEHIND), surfels[None] - (0, 5, 0), normals[None],
                 camera, height, width)
    aside = rgb(two_hands()[None] + (30, 0, 0), surfels[None] + (30, 0, 0), normals[None],
                camera, height, width)
    empty = rgb(np.full((1, 42, 3), FAR_BEHIND), np.zeros((1, 0, 3)), np.zeros((1, 0, 3)),
                camera, height, width)
    assert torch.equal(behind, empty) and torch.equal(aside, empty)
    assert dominant(empty[0], 0).all()  # table and wall only


def test_batch_equals_clips_rendered_one_by_one():
    height, width = 48, 64
    generator = torch.Generator().manual_seed(0)
    K, R, T = (torch.cat([x, x]) for x in table_camera(height, width))
    T[1] += torch.tensor([0.03, 0.0, 0.05])
    joints = torch.tensor(two_hands(), dtype=torch.float32).expand(2, 3, 42, 3).clone()
    joints += 0.01 * torch.randn(joints.shape, generator=generator)
    s, n = sphere((0.0, 0.2, 0.06), 0.05, 600)
    surfels = torch.tensor(s, dtype=torch.float32).expand(2, 3, -1, 3).clone()
    surfels[:, 1:] += torch.tensor([0.0, 0.01, 0.0])  # moving a little
    normals = torch.tensor(n, dtype=torch.float32).expand(2, 3, -1, 3)
    looks = (torch.rand(2, len(s), 3, generator=generator), torch.rand(2, 3, generator=generator),
             torch.rand(2, 2, 3, generator=generator), torch.rand(2, 3, generator=generator),
             torch.tensor([1, 2]))
    batch = render_rgb(joints, surfels, normals, *looks, K, R, T, height, width)
    for b in range(2):
        item = (x[b:b + 1] for x in (joints, surfels, normals, *looks, K, R, T))
        assert torch.equal(render_rgb(*item, height, width)[0], batch[b])
