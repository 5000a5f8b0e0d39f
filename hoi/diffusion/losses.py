"""Training losses in x0 space: L_SViMo (paper equation 5) and L_VID (equation 6, appendix B.2).

Every "||.||^2" of the paper is an MSE, the mean over elements, so that the weights do not
depend on clip length, batch size or latent size. Each function returns a dict of scalar
tensors: the terms (for logging) and `total` (for backward). Inputs in bf16/fp16 are upcast to
float32 first (reductions over whole latents, and nearest-neighbour search, need the mantissa);
gradients flow back through the cast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hoi.geometry.chamfer import chamfer_distance
from hoi.geometry.motion import OBJECTS, POINTS_PER_OBJECT, unpack

# Weights of paper appendix B.2: equation 12 (hand velocity and acceleration terms) and
# equation 13 (object dynamics term L2).
HAND_VELOCITY_WEIGHT = 0.2
HAND_ACCELERATION_WEIGHT = 0.05
OBJECT_DYNAMICS_WEIGHT = 0.1

FRAME_DIM = -3
"""The frame axis N of joints (..., N, 42, 3) and points (..., N, 298, 3)."""


def _at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [x.to(torch.promote_types(x.dtype, torch.float32)) for x in tensors]


def svimo_loss(x0_hat_video: torch.Tensor, x0_video: torch.Tensor, x0_hat_motion: torch.Tensor,
               x0_motion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equation 5: MSE of the x0 estimates of the video and motion latents (B, F, C, h, w)."""
    x0_hat_video, x0_video, x0_hat_motion, x0_motion = _at_least_float32(
        x0_hat_video, x0_video, x0_hat_motion, x0_motion)
    video = F.mse_loss(x0_hat_video, x0_video)
    motion = F.mse_loss(x0_hat_motion, x0_motion)
    return {"video": video, "motion": motion, "total": video + motion}


def _mse_or_zero(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE, or 0 (still attached to pred's graph) when there is nothing to compare, e.g. the
    acceleration of a clip shorter than 3 frames."""
    if pred.numel() == 0:
        return pred.sum()
    return F.mse_loss(pred, target)


def hand_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equation 12 on joints (B, N, 42, 3): positions, first and second temporal differences."""
    position = F.mse_loss(pred, target)
    velocity = _mse_or_zero(pred.diff(dim=FRAME_DIM), target.diff(dim=FRAME_DIM))
    acceleration = _mse_or_zero(pred.diff(n=2, dim=FRAME_DIM), target.diff(n=2, dim=FRAME_DIM))
    total = (position + HAND_VELOCITY_WEIGHT * velocity
             + HAND_ACCELERATION_WEIGHT * acceleration)
    return {"position": position, "velocity": velocity, "acceleration": acceleration,
            "total": total}


def _consecutive_chamfer(points: torch.Tensor) -> torch.Tensor:
    """Chamfer distance between consecutive frames: (B, N, P, 3) -> (B, N - 1)."""
    return chamfer_distance(points[..., 1:, :, :], points[..., :-1, :, :])


def _one_object_terms(pred: torch.Tensor, target: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and L2 of equation 13 for one object's points (B, N, 149, 3)."""
    shape_term = chamfer_distance(pred, target).mean()  # per frame, averaged over (B, N)
    if pred.shape[FRAME_DIM] < 2:
        return shape_term, pred.sum() * 0.0
    dynamics = (_consecutive_chamfer(target) - _consecutive_chamfer(pred)).abs().mean()
    return shape_term, dynamics


def object_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equation 13 on object points (B, N, 298, 3), tool [:149] and target [149:] separately.

    Returns chamfer (L1) and dynamics (L2), each averaged over the two objects; per-object
    L_obj = L1 + 0.1 L2 under the objects' names ("tool", "target"); total = their mean.
    """
    out: dict[str, torch.Tensor] = {}
    shape_terms, dynamics_terms = [], []
    for i, name in enumerate(OBJECTS):
        part = slice(i * POINTS_PER_OBJECT, (i + 1) * POINTS_PER_OBJECT)
        shape_term, dynamics = _one_object_terms(pred[..., part, :], target[..., part, :])
        out[name] = shape_term + OBJECT_DYNAMICS_WEIGHT * dynamics
        shape_terms.append(shape_term)
        dynamics_terms.append(dynamics)
    out["chamfer"] = torch.stack(shape_terms).mean()
    out["dynamics"] = torch.stack(dynamics_terms).mean()
    out["total"] = out["chamfer"] + OBJECT_DYNAMICS_WEIGHT * out["dynamics"]
    return out


def vid_loss(pred_motion: torch.Tensor, target_motion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Equation 6: hand loss + object loss on normalised motions (B, N, 340, 3).

    Returns hand and object (their totals), total = hand + object, and every sub-term as
    hand_<term> / object_<term> (position, velocity, acceleration; chamfer, dynamics, tool,
    target)."""
    pred_motion, target_motion = _at_least_float32(pred_motion, target_motion)
    pred_joints, pred_points = unpack(pred_motion)
    joints, points = unpack(target_motion)
    hand = hand_loss(pred_joints, joints)
    obj = object_loss(pred_points, points)
    out = {"hand": hand["total"], "object": obj["total"], "total": hand["total"] + obj["total"]}
    out |= {f"hand_{k}": v for k, v in hand.items() if k != "total"}
    out |= {f"object_{k}": v for k, v in obj.items() if k != "total"}
    return out


__all__ = ["HAND_ACCELERATION_WEIGHT", "HAND_VELOCITY_WEIGHT", "OBJECT_DYNAMICS_WEIGHT",
           "hand_loss", "object_loss", "svimo_loss", "vid_loss"]
