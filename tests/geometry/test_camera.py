import numpy as np
import torch

from hoi.geometry.camera import crop_resize_intrinsics, intrinsics, look_at, project

K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 200.0, 30.0], [0.0, 0.0, 1.0]])


def test_projection_of_hand_computed_points():
    R, T = torch.eye(3), torch.tensor([0.0, 0.0, 2.0])  # the world sits 2 m in front
    points = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.1, 0.0], [0.0, 0.0, 2.0]])
    uv, depth = project(points, K, R, T)
    # u = fx x / z + cx, v = fy y / z + cy
    torch.testing.assert_close(uv, torch.tensor([[50.0, 30.0], [60.0, 20.0], [50.0, 30.0]]))
    torch.testing.assert_close(depth, torch.tensor([2.0, 2.0, 4.0]))


def test_projection_broadcasts_one_camera_per_clip_over_frames():
    # in front of the camera (depth 2.5-3.5): an unseeded randn put a point near depth 0 now
    # and then, where its huge projection differed in the last float32 bit between the two
    # broadcasts (1.9 px of 380,000)
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2, 5, 7, 3, generator=g) - 0.5 + torch.tensor([0.0, 0.0, 3.0])
    R = torch.stack([torch.eye(3), torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])])
    uv, _ = project(points, K[None, None], R[:, None], torch.zeros(2, 1, 3))
    for b in range(2):
        one, _ = project(points[b], K, R[b], torch.zeros(3))
        torch.testing.assert_close(uv[b], one)


def test_look_at_puts_the_target_at_the_principal_point_with_world_up_pointing_up():
    K_np = intrinsics(64, 96, fov_y_deg=48.0)
    R, T = look_at(np.array([0.3, -0.5, 0.4]), np.array([0.0, 0.0, 0.05]))
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.isclose(np.linalg.det(R), 1.0, atol=1e-6)
    cam = torch.from_numpy(np.stack([[0.0, 0.0, 0.05], [0.0, 0.0, 0.15]]).astype(np.float32))
    uv, depth = project(cam, *(torch.from_numpy(x) for x in (K_np, R, T)))
    torch.testing.assert_close(uv[0], torch.from_numpy(K_np[:2, 2]))
    assert depth[0] > 0 and uv[1, 1] < uv[0, 1]  # higher in the world = higher in the image


def test_crop_then_resize_moves_projections_with_the_pixels():
    K_np = intrinsics(300, 400, fov_y_deg=50.0)
    point = np.array([0.05, -0.02, 0.6], np.float32)
    u, v = (K_np @ point)[:2] / point[2]
    left, top, scale = 120.0, 80.0, 0.25
    K2 = crop_resize_intrinsics(K_np, left, top, scale, scale)
    u2, v2 = (K2 @ point)[:2] / point[2]
    # pixel centres at integers: x -> (x - left + 0.5) * s - 0.5
    np.testing.assert_allclose([u2, v2], [(u - left + 0.5) * scale - 0.5,
                                          (v - top + 0.5) * scale - 0.5], rtol=1e-5)
