"""3D motion metrics against ground truth, in metres (camera frame): the paper's MPJPE, motion
smoothness, object Chamfer distance and interaction FID, and the training loop's diagnostics.

Object points are ordered samples of each object's surface (the same index is the same
surface point in every frame), so a per-point distance is meaningful, unlike for free point
clouds where Chamfer distance is the right comparison.
"""

from __future__ import annotations

import torch

from hoi.geometry.camera import project
from hoi.geometry.chamfer import chamfer_distance
from hoi.geometry.hand import JOINTS_PER_HAND
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.metrics.autoencoder import MotionAutoencoder
from hoi.metrics.frechet import frechet_distance_features


def mpjpe(joints: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: (B, N, 42, 3) x 2 -> (B,) metres."""
    return (joints - target).norm(dim=-1).mean(dim=(1, 2))


def point_error(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-point distance: (B, N, P, 3) x 2 -> (B,) metres."""
    return (points - target).norm(dim=-1).mean(dim=(1, 2))


def reprojection_error(x: torch.Tensor, target: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Mean image distance (pixels) between camera-frame points and their targets, both
    projected with the intrinsics K: what an overlay of the motion on the video shows, blind
    to errors along the viewing ray (depth).

    x, target: (B, N, P, 3) camera frame; K: (B, 3, 3) -> (B,) pixels."""
    eye, zero = torch.eye(3, dtype=x.dtype, device=x.device), x.new_zeros(3)
    K = K.to(x.dtype)[:, None]  # one camera per clip, all frames
    uv, _ = project(x, K, eye, zero)
    uv_target, _ = project(target, K, eye, zero)
    return (uv - uv_target).norm(dim=-1).mean(dim=(1, 2))


def hand_tool_distance(joints: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """How far the right hand (the tool hand) is from the tool: the distance from each
    right-hand joint to its nearest tool point, minimum over joints, mean over frames.

    joints (B, N, 42, 3), points (B, N, 298, 3) -> (B,) metres; near 0 while grasping."""
    right = joints[..., JOINTS_PER_HAND:, :]
    tool = points[..., :POINTS_PER_OBJECT, :]
    nearest = torch.cdist(right.flatten(0, 1), tool.flatten(0, 1)).amin(dim=(1, 2))
    return nearest.view(joints.shape[:2]).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# The paper's motion table: motion smoothness, Chamfer distance, interaction FID
# ---------------------------------------------------------------------------------------------


def acceleration(x: torch.Tensor) -> torch.Tensor:
    """Second-order finite difference over frames: (B, N, J, 3) -> (B, N - 2, J, 3), in units
    per frame^2 (x[t - 1] - 2 x[t] + x[t + 1])."""
    return x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:]


def motion_smoothness(joints: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's hand "MSmoo." (lower is better), defined here as the acceleration error:
    the mean over frames 1..N-2 and joints of |a_gen - a_gt|, with a the second-order
    difference of `acceleration` (metres per frame^2, not divided by dt^2).

    The paper does not define MSmoo.; its VID loss (appendix B.2) supervises first- and
    second-order differences of the hand joints against ground truth, and its table reports
    MSmoo. below MPJPE, which a GT-referenced acceleration error does. A jerk-based variant
    would add one more difference.

    joints, target: (B, N, 42, 3), N >= 3 -> (B,)."""
    return (acceleration(joints) - acceleration(target)).norm(dim=-1).mean(dim=(1, 2))


def object_chamfer(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's object "Cham.": per frame, the Chamfer distance (`hoi.geometry.chamfer`:
    squared distances, point-averaged, both directions summed) between the generated and
    ground-truth tool, and between the target objects; mean over the two objects and frames,
    as the paper's object loss splits them (appendix B.2).

    points, target: (B, N, 298, 3) -> (B,) in squared units of the input (m^2)."""
    objects = [slice(0, POINTS_PER_OBJECT), slice(POINTS_PER_OBJECT, 2 * POINTS_PER_OBJECT)]
    per_object = [chamfer_distance(points[..., s, :], target[..., s, :]) for s in objects]
    return torch.stack(per_object).mean(dim=(0, 2))


def object_centre_error(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distance between generated and true centroids of each object, averaged over the two
    objects and the frames: (B, N, 298, 3) x 2 -> (B,) metres. Like the Chamfer distance it
    ignores the points' order; unlike it, it says how far an object is off, not its shape."""
    centre = points.unflatten(2, (2, POINTS_PER_OBJECT)).mean(3)
    true_centre = target.unflatten(2, (2, POINTS_PER_OBJECT)).mean(3)
    return (centre - true_centre).norm(dim=-1).mean(dim=(1, 2))


def interaction_fid(autoencoder: MotionAutoencoder, motions: torch.Tensor,
                    reference: torch.Tensor, batch_size: int = 64) -> float:
    """The paper's HOI "FID": the Fréchet distance between the Gaussians fitted to the motion
    autoencoder's clip features (`hoi.metrics.autoencoder.MotionAutoencoder.encode`) of
    generated motions (M, N, 340, 3) and reference motions (M', N, 340, 3), both in the units
    the autoencoder was trained on. Needs M, M' well above the feature size for a stable
    covariance; small sets are biased upwards."""
    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([autoencoder.encode(x[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])

    return frechet_distance_features(embed(motions), embed(reference))
