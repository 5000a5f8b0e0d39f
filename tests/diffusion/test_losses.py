import itertools

import pytest
import torch

from hoi.diffusion.losses import hand_loss, object_loss, svimo_loss, vid_loss
from hoi.geometry.motion import NUM_JOINTS, POINTS_PER_OBJECT, pack

B, N = 2, 5


def object_points() -> torch.Tensor:
    """(B, N, 298, 3) static objects: tool and target on two disjoint integer grids (spacing 1),
    so nearest neighbours stay unambiguous under displacements well below 0.5."""
    grid = torch.tensor(list(itertools.product(range(6), repeat=3))[:POINTS_PER_OBJECT],
                        dtype=torch.float64)
    both = torch.cat([grid, grid + torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64)])
    return both.expand(B, N, -1, -1).clone()


def frames() -> torch.Tensor:
    """Frame index n as (1, N, 1, 1), for trajectories."""
    return torch.arange(N, dtype=torch.float64).reshape(1, N, 1, 1)


# --- L_SViMo -------------------------------------------------------------------------------


def test_svimo_loss_is_the_sum_of_the_two_mses():
    z_v, z_m = torch.randn(B, 3, 16, 4, 6), torch.randn(B, 3, 16, 4, 6)
    hat_v = (z_v + 0.5).requires_grad_()
    hat_m = (z_m - 2.0).requires_grad_()
    loss = svimo_loss(hat_v, z_v, hat_m, z_m)
    torch.testing.assert_close(loss["video"], torch.tensor(0.25))
    torch.testing.assert_close(loss["motion"], torch.tensor(4.0))
    torch.testing.assert_close(loss["total"], torch.tensor(4.25))
    loss["total"].backward()
    # d/dx mean((x - z)^2) = 2 (x - z) / numel
    torch.testing.assert_close(hat_v.grad, torch.full_like(hat_v, 2 * 0.5 / hat_v.numel()))
    torch.testing.assert_close(hat_m.grad, torch.full_like(hat_m, 2 * -2.0 / hat_m.numel()))


# --- hand ----------------------------------------------------------------------------------


def test_hand_constant_offset_costs_only_position():
    target = torch.randn(B, N, NUM_JOINTS, 3, dtype=torch.float64)
    loss = hand_loss(target + 0.3, target)
    torch.testing.assert_close(loss["position"], torch.tensor(0.09, dtype=torch.float64))
    assert float(loss["velocity"]) < 1e-28 and float(loss["acceleration"]) < 1e-28
    torch.testing.assert_close(loss["total"], loss["position"])


def test_hand_linear_drift_has_constant_velocity_error_and_no_acceleration_error():
    target = torch.randn(B, N, NUM_JOINTS, 3, dtype=torch.float64)
    speed = 0.1
    loss = hand_loss(target + speed * frames(), target)
    position = speed ** 2 * sum(n ** 2 for n in range(N)) / N  # mean of (speed n)^2
    torch.testing.assert_close(loss["position"], torch.tensor(position, dtype=torch.float64))
    torch.testing.assert_close(loss["velocity"], torch.tensor(speed ** 2, dtype=torch.float64))
    assert float(loss["acceleration"]) < 1e-28
    torch.testing.assert_close(loss["total"],
                               torch.tensor(position + 0.2 * speed ** 2, dtype=torch.float64))


def test_hand_quadratic_drift_weights_the_three_terms_as_the_paper():
    target = torch.randn(B, N, NUM_JOINTS, 3, dtype=torch.float64)
    a = 0.1
    loss = hand_loss(target + a * frames() ** 2, target)
    position = a ** 2 * sum(n ** 4 for n in range(N)) / N
    velocity = a ** 2 * sum((2 * n - 1) ** 2 for n in range(1, N)) / (N - 1)  # n^2 - (n-1)^2
    acceleration = (2 * a) ** 2
    expected = position + 0.2 * velocity + 0.05 * acceleration
    for key, value in [("position", position), ("velocity", velocity),
                       ("acceleration", acceleration), ("total", expected)]:
        torch.testing.assert_close(loss[key], torch.tensor(value, dtype=torch.float64))


def test_hand_loss_of_a_single_frame_has_no_difference_terms():
    target = torch.randn(B, 1, NUM_JOINTS, 3)
    pred = (target + 1.0).requires_grad_()
    loss = hand_loss(pred, target)
    assert loss["velocity"].item() == 0.0 and loss["acceleration"].item() == 0.0
    torch.testing.assert_close(loss["total"].detach(), torch.tensor(1.0))
    loss["total"].backward()
    assert torch.isfinite(pred.grad).all()


# --- object --------------------------------------------------------------------------------


def test_object_loss_of_the_ground_truth_is_zero():
    points = object_points()
    loss = object_loss(points.clone(), points)
    for key in ("chamfer", "dynamics", "tool", "target", "total"):
        assert float(loss[key]) == 0.0


def test_object_loss_ignores_point_order_within_each_object():
    points = object_points()
    order = torch.cat([torch.randperm(POINTS_PER_OBJECT),
                       POINTS_PER_OBJECT + torch.randperm(POINTS_PER_OBJECT)])
    assert float(object_loss(points[:, :, order], points)["total"]) == 0.0


def test_object_rigid_translation_costs_chamfer_but_no_dynamics():
    points = object_points()
    shift = torch.tensor([0.1, 0.2, -0.1], dtype=torch.float64)
    loss = object_loss(points + shift, points)
    chamfer = 2 * shift.square().sum()  # every point's nearest neighbour is its own copy
    torch.testing.assert_close(loss["chamfer"], chamfer)
    assert float(loss["dynamics"]) < 1e-24  # consecutive frames equal in both sequences
    torch.testing.assert_close(loss["total"], chamfer)


def test_only_the_tool_moving_changes_only_the_tool_terms():
    points = object_points()
    step = torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64)
    pred = points.clone()
    pred[:, :, :POINTS_PER_OBJECT] += frames() * step  # tool drifts, target object stays
    loss = object_loss(pred, points)
    # Tool: frame n is off by n * step: L1 = mean_n 2 |n step|^2; the ground truth is static
    # (consecutive Chamfer 0) while the prediction moves |step| per frame: L2 = 2 |step|^2.
    s2 = float(step.square().sum())
    l1 = 2 * s2 * sum(n ** 2 for n in range(N)) / N
    l2 = 2 * s2
    torch.testing.assert_close(loss["tool"], torch.tensor(l1 + 0.1 * l2, dtype=torch.float64))
    assert float(loss["target"]) == 0.0
    # Averaged over the two objects.
    torch.testing.assert_close(loss["chamfer"], torch.tensor(l1 / 2, dtype=torch.float64))
    torch.testing.assert_close(loss["dynamics"], torch.tensor(l2 / 2, dtype=torch.float64))
    torch.testing.assert_close(loss["total"], (loss["tool"] + loss["target"]) / 2)


def test_tool_and_target_are_not_one_point_cloud():
    """Swapping the two objects leaves the union unchanged but must cost as much as the
    distance between them."""
    points = object_points()
    swapped = torch.cat([points[:, :, POINTS_PER_OBJECT:], points[:, :, :POINTS_PER_OBJECT]], 2)
    assert float(object_loss(swapped, points)["chamfer"]) > 50.0  # the objects are 10 apart


def test_object_dynamics_compares_motion_magnitudes_frame_by_frame():
    """Ground truth moves, prediction static in place of its first frame."""
    target = object_points()
    step = torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64)
    target = target + frames() * step
    pred = target[:, :1].expand(-1, N, -1, -1).clone()
    loss = object_loss(pred, target)
    s2 = float(step.square().sum())
    torch.testing.assert_close(loss["dynamics"], torch.tensor(2 * s2, dtype=torch.float64))


# --- L_VID ---------------------------------------------------------------------------------


def test_vid_loss_sums_hand_and_object_and_reaches_every_row_of_the_prediction():
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(B, N, NUM_JOINTS, 3, generator=g, dtype=torch.float64)
    target = pack(joints, object_points())
    pred = (target + 0.05 * torch.randn(target.shape, generator=g, dtype=torch.float64))
    pred.requires_grad_()
    loss = vid_loss(pred, target)
    hand = hand_loss(pred[:, :, :NUM_JOINTS], joints)
    obj = object_loss(pred[:, :, NUM_JOINTS:], object_points())
    torch.testing.assert_close(loss["hand"], hand["total"])
    torch.testing.assert_close(loss["object"], obj["total"])
    torch.testing.assert_close(loss["total"], hand["total"] + obj["total"])
    for key in ("position", "velocity", "acceleration"):
        torch.testing.assert_close(loss[f"hand_{key}"], hand[key])
    for key in ("chamfer", "dynamics", "tool", "target"):
        torch.testing.assert_close(loss[f"object_{key}"], obj[key])
    loss["total"].backward()
    assert (pred.grad.abs().sum(dim=(0, 1, 3)) > 0).all()  # every joint and point row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vid_loss_is_finite_in_training_dtypes(dtype):
    target = torch.randn(B, N, NUM_JOINTS + 2 * POINTS_PER_OBJECT, 3).to(dtype)
    pred = (target + 0.1).requires_grad_()
    loss = vid_loss(pred, target)
    loss["total"].backward()
    assert loss["total"].dtype == torch.float32  # reduced in float32, whatever the input
    assert torch.isfinite(loss["total"]) and torch.isfinite(pred.grad).all()
    assert pred.grad.dtype == dtype and pred.grad.abs().sum() > 0
