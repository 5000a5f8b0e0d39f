"""Metrics the paper lacks: video-motion consistency, hand-object penetration, contact stability.

Joints (B, N, 42, 3) and object points (B, N, 298, 3) are in metres, in the frame that the
camera's R, T map to the camera (the world frame of a clip; pass R = I, T = 0 for camera-frame
motions). Every metric returns one value per clip, (B,), NaN where it is undefined for a clip
(no visible joint, no contact): aggregate with `torch.nanmean`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from hoi.geometry.camera import project
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.render.motion_video import JOINT_RGB, NEAR, render_motion_video

# ---------------------------------------------------------------------------------------------
# Video-motion consistency
# ---------------------------------------------------------------------------------------------

COLOUR_TOLERANCE = 19
"""A pixel shows joint j when each channel is within this of j's disc colour. Distinct colours
of the motion-video palette differ by at least 40 in some channel, so with 19 a pixel matches
at most one colour (finger joints of one finger share a colour)."""


class VideoMotionConsistency(NamedTuple):
    """Per-clip agreement of a 3D motion with a motion video; both (B,)."""

    hit_rate: torch.Tensor
    """Fraction of the joints that are visible in the ideal render whose colour appears within
    `radius` px of where the motion projects them (1 for the motion's own render)."""
    pixel_error: torch.Tensor
    """Mean over those joints of the distance in px to the nearest pixel of their colour,
    capped at `max_px` (0 for the motion's own render)."""


def _disc_offsets(radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pixel offsets (O, 2) as (drow, dcol) within `radius`, and their lengths (O,)."""
    r = torch.arange(-radius, radius + 1)
    grid = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).view(-1, 2)
    length = grid.float().norm(dim=-1)
    keep = length <= radius
    return grid[keep], length[keep]


def nearest_colour_distance(video: torch.Tensor, uv: torch.Tensor, colours: torch.Tensor,
                            tolerance: int, max_px: int, chunk_frames: int = 8
                            ) -> torch.Tensor:
    """Distance from each projected joint to the nearest pixel showing its colour.

    Args:
        video: uint8 (B, N, H, W, 3).
        uv: (B, N, J, 2) pixel coordinates (u = column, v = row; centres at integers).
        colours: uint8 (J, 3) colour of each joint.
        tolerance: per-channel tolerance of a colour match.
        max_px: search radius around the joint's pixel.
    Returns:
        (B, N, J) distance in pixels from the joint's (rounded) pixel, +inf where no pixel
        within `max_px` matches.
    """
    B, N, H, W, _ = video.shape
    offsets, length = (x.to(video.device) for x in _disc_offsets(max_px))
    frames = video.reshape(B * N, H * W, 3).int()
    centre = uv.flatten(0, 1).round().long().flip(-1)  # (F, J, 2) as (row, col)
    colours = colours.to(video.device).int()
    out = []
    for start in range(0, B * N, chunk_frames):
        pix = centre[start:start + chunk_frames, :, None] + offsets  # (f, J, O, 2)
        inside = ((pix >= 0) & (pix < pix.new_tensor([H, W]))).all(-1)
        flat = (pix[..., 0].clamp(0, H - 1) * W + pix[..., 1].clamp(0, W - 1))
        chunk = frames[start:start + chunk_frames]
        rgb = torch.gather(chunk, 1, flat.flatten(1)[..., None].expand(-1, -1, 3))
        rgb = rgb.view(*flat.shape, 3)
        match = inside & ((rgb - colours[:, None]).abs().amax(-1) <= tolerance)
        out.append(torch.where(match, length, torch.inf).amin(-1))
    return torch.cat(out).view(B, N, -1)


def video_motion_consistency(joints: torch.Tensor, points: torch.Tensor, K: torch.Tensor,
                             R: torch.Tensor, T: torch.Tensor, motion_video: torch.Tensor,
                             radius: int | None = None, max_px: int | None = None,
                             tolerance: int = COLOUR_TOLERANCE) -> VideoMotionConsistency:
    """Does the generated motion video show the hand joints where the generated 3D motion is?

    1. Project the joints with the clip's camera (`hoi.geometry.camera.project`).
    2. Render the motion itself (`render_motion_video`, the paper's Proj): a joint counts only
       if its disc colour is the pixel it projects to there, i.e. it is in view and not hidden
       behind nearer joints, bones or object points.
    3. In the generated motion video, find for each counted joint the nearest pixel within
       `max_px` whose colour matches the joint's (`COLOUR_TOLERANCE`): a hit when it is at most
       `radius` px away.

    Only the motion video can be checked this way: the RGB video has no joint colours and would
    need a hand-keypoint detector.

    Args:
        joints: (B, N, 42, 3); points: (B, N, 298, 3) (for occlusion in the ideal render).
        K, R: (B, 3, 3); T: (B, 3) camera of each clip.
        motion_video: uint8 (B, N, H, W, 3) generated motion video.
        radius: hit distance in px; default 1 % of the height (4 px at 416), at least 1.
        max_px: search and error cap in px; default 5 % of the height (21 px at 416).
    Returns:
        `VideoMotionConsistency` of (B,) tensors, NaN for clips without a visible joint.
    """
    H, W = motion_video.shape[2:4]
    radius = radius if radius is not None else max(1, round(0.01 * H))
    max_px = max(radius, max_px if max_px is not None else round(0.05 * H))
    cam = [x.float()[:, None] for x in (K, R, T)]
    uv, depth = project(joints.float(), *cam)
    ideal = render_motion_video(joints, points, K, R, T, H, W)
    visible = (nearest_colour_distance(ideal, uv, JOINT_RGB, 0, 0) == 0) & (depth > NEAR)
    distance = nearest_colour_distance(motion_video, uv, JOINT_RGB, tolerance, max_px)
    count = visible.sum(dim=(1, 2)).float()
    hits = ((distance <= radius) & visible).sum(dim=(1, 2)).float()
    error = torch.where(visible, distance.clamp(max=max_px), 0.0).sum(dim=(1, 2))
    return VideoMotionConsistency(hits / count, error / count)


# ---------------------------------------------------------------------------------------------
# Hand-object penetration
# ---------------------------------------------------------------------------------------------


def _objects(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 298, 3) -> (B, N, 2, 149, 3): tool, then target."""
    return points.unflatten(-2, (2, POINTS_PER_OBJECT))


def surface_normals(points: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Unit normals, up to sign, of a sampled surface: (..., P, 3) -> (..., P, 3).

    The normal at a point is the direction of least variance of its k nearest neighbours
    (itself included). No orientation: a point cloud of a thin part (a blade, a board) has
    points of both faces among the neighbours, so in/out cannot be told locally."""
    index = torch.cdist(points, points).topk(min(k, points.shape[-2]), largest=False).indices
    neighbours = torch.gather(points[..., None, :, :].expand(*index.shape[:-1], -1, 3), -2,
                              index[..., None].expand(*index.shape, 3))
    centred = neighbours - neighbours.mean(dim=-2, keepdim=True)
    _, vectors = torch.linalg.eigh(centred.transpose(-1, -2) @ centred)
    return vectors[..., 0]  # eigenvalues ascending: least variance first


def point_spacing(points: torch.Tensor) -> torch.Tensor:
    """Median distance from a point to its nearest neighbour: (..., P, 3) -> (...)."""
    d = torch.cdist(points, points)
    d = d + torch.diag_embed(torch.full(d.shape[:-1], torch.inf, dtype=d.dtype))
    return d.amin(dim=-1).median(dim=-1).values


def penetration_depths(joints: torch.Tensor, points: torch.Tensor, k: int = 8,
                       tube: float = 1.5) -> torch.Tensor:
    """How deep each joint is inside either object, approximated on the point cloud.

    Per object, for each joint: its nearest surface point p and that point's normal line n
    (`surface_normals`). The joint is inside when the object has points on *both* sides of
    it along the line through the joint parallel to n (within `tube` x the object's
    `point_spacing` of the line): a point-cloud version of the ray-parity test that needs no
    normal orientation, so thin parts (a joint above a blade is not inside it) and open
    containers seen from above work. Its depth is then the distance to p's tangent plane,
    |(joint - p) . n|. Failure case: a joint inside the hollow of a cup, whose nearest wall's
    normal line hits the opposite wall, counts as inside.

    joints (B, N, 42, 3), points (B, N, 298, 3) -> (B, N, 42) metres, >= 0, max over the two
    objects."""
    objects = _objects(points.float())  # (B, N, 2, 149, 3)
    normals = surface_normals(objects, k)
    lateral_max = (tube * point_spacing(objects))[..., None, None]  # (B, N, 2, 1, 1)
    j = joints.float()[:, :, None].expand(-1, -1, 2, -1, -1)  # (B, N, 2, 42, 3)
    nearest = torch.cdist(j, objects).argmin(dim=-1)  # (B, N, 2, 42)
    index = nearest[..., None].expand(*nearest.shape, 3)
    p, n = torch.gather(objects, -2, index), torch.gather(normals, -2, index)
    v = objects[..., None, :, :] - j[..., None, :]  # (B, N, 2, 42, 149, 3) joint -> points
    along = (v * n[..., None, :]).sum(-1)
    near_line = (v - along[..., None] * n[..., None, :]).norm(dim=-1) <= lateral_max
    inside = (near_line & (along > 0)).any(-1) & (near_line & (along < 0)).any(-1)
    depth = ((j - p) * n).sum(-1).abs()
    return torch.where(inside, depth, 0.0).amax(dim=2)


class Penetration(NamedTuple):
    """Per-clip hand-object penetration; both (B,)."""

    depth: torch.Tensor
    """Mean over frames of the deepest joint's penetration (metres)."""
    frame_rate: torch.Tensor
    """Fraction of frames with at least one joint inside an object."""


def hand_object_penetration(joints: torch.Tensor, points: torch.Tensor, k: int = 8,
                            tube: float = 1.5) -> Penetration:
    """joints (B, N, 42, 3), points (B, N, 298, 3) -> `Penetration` (see `penetration_depths`).

    Joint centres lie about a centimetre under the skin, so a joint inside the object is a
    penetration of at least that much by the hand's surface: the metric is conservative."""
    deepest = penetration_depths(joints, points, k, tube).amax(dim=-1)  # (B, N)
    return Penetration(deepest.mean(dim=1), (deepest > 0).float().mean(dim=1))


# ---------------------------------------------------------------------------------------------
# Contact stability
# ---------------------------------------------------------------------------------------------

CONTACT_RADIUS = 0.02
"""A joint touches the tool when it is within this many metres of a tool point: joint centres
lie about a centimetre under the skin and the 149 points sample the surface about a centimetre
apart on a hand-sized tool."""


def contact_sets(joints: torch.Tensor, points: torch.Tensor, radius: float = CONTACT_RADIUS
                 ) -> torch.Tensor:
    """Which joints touch the tool in each frame: (B, N, 42, 3), (B, N, 298, 3) ->
    bool (B, N, 42)."""
    tool = points[..., :POINTS_PER_OBJECT, :].float()
    return torch.cdist(joints.float(), tool).amin(dim=-1) <= radius


def contact_stability(joints: torch.Tensor, points: torch.Tensor,
                      radius: float = CONTACT_RADIUS) -> torch.Tensor:
    """How steady the hand-tool contact is: the intersection over union of the sets of joints
    touching the tool (`contact_sets`) in consecutive frames, averaged over the frame pairs
    where either frame has contact. A steady grasp scores 1; contact that flickers on and off
    or slides from joint to joint scores less; the onset and the release of a grasp each count
    as one pair with IoU 0.

    joints (B, N, 42, 3), points (B, N, 298, 3) -> (B,), NaN for clips without contact."""
    c = contact_sets(joints, points, radius)
    inter = (c[:, 1:] & c[:, :-1]).sum(-1).float()
    union = (c[:, 1:] | c[:, :-1]).sum(-1).float()
    in_contact = union > 0
    iou = torch.where(in_contact, inter / union.clamp_min(1), 0.0)
    return iou.sum(dim=1) / in_contact.sum(dim=1)  # 0 / 0 = NaN without contact


__all__ = ["COLOUR_TOLERANCE", "CONTACT_RADIUS", "Penetration", "VideoMotionConsistency",
           "contact_sets", "contact_stability", "hand_object_penetration",
           "nearest_colour_distance", "penetration_depths", "point_spacing", "surface_normals",
           "video_motion_consistency"]
