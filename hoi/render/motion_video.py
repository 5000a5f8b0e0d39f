"""The rendered motion video (SPEC section 5, the paper's ``Proj``).

3D hand joints and object points are projected with the clip's camera and drawn on a black
canvas: the 40 hand bones as line segments coloured by finger and hand, the 42 joints as discs
(a lighter tint of their finger's colour; the wrists their own colour), tool and target points
as splats in two colours, nearer primitives hiding farther ones. The same size and frame count
as the video, so the video VAE encodes it too.

It runs at every training and sampling step, so it is batched over clips and frames, draws in
chunks of frames through the shared z-buffer (`hoi.render.raster`) and stays on the inputs'
device. Pixel sizes are fixed per image height (`stamp_radii`), not per depth: the picture is a
diagram of the motion, not a photograph.
"""

from __future__ import annotations

import torch

from hoi.geometry.camera import project
from hoi.geometry.hand import FINGER_JOINTS, JOINTS_PER_HAND, NUM_JOINTS, two_hand_bones
from hoi.geometry.motion import NUM_POINTS, POINTS_PER_OBJECT
from hoi.render.raster import blank_canvas, discs, frame_chunks, nearest, segment_samples

NEAR = 0.01
"""Primitives nearer to (or behind) the camera plane than this many metres are not drawn."""

# ---------------------------------------------------------------------------------------------
# Palette: one colour per part, fixed so that the model learns one mapping for all clips
# ---------------------------------------------------------------------------------------------

# Finger colours (thumb, index, middle, ring, pinky): warm hues for the left hand, cool hues
# for the right, so both the hand and the finger of a bone can be read off its colour.
FINGER_RGB = torch.tensor([
    [[255, 40, 40], [255, 150, 0], [255, 240, 0], [120, 255, 0], [0, 200, 80]],
    [[0, 230, 255], [0, 120, 255], [40, 40, 255], [160, 60, 255], [255, 0, 200]],
], dtype=torch.uint8)
"""(2, 5, 3) bone colour of each hand (left, right) and finger (`hoi.geometry.hand.FINGERS`)."""
WRIST_RGB = torch.tensor([[200, 160, 120], [120, 160, 200]], dtype=torch.uint8)
"""(2, 3) joint colour of the left and right wrist."""
TOOL_RGB = torch.tensor([255, 255, 255], dtype=torch.uint8)
TARGET_RGB = torch.tensor([140, 140, 140], dtype=torch.uint8)


def _joint_rgb() -> torch.Tensor:
    finger_of = {j: f for f, joints in enumerate(FINGER_JOINTS.values()) for j in joints}
    tint = (FINGER_RGB.float() + 255.0) / 2  # halfway to white: joints stand out on bones
    rgb = [WRIST_RGB[h] if j == 0 else tint[h, finger_of[j]].round().to(torch.uint8)
           for h in range(2) for j in range(JOINTS_PER_HAND)]
    return torch.stack(rgb)


BONES = torch.tensor(two_hand_bones(), dtype=torch.int64)
"""(40, 4) bones of both hands as (parent, child, hand, finger) joint indices."""
JOINT_RGB = _joint_rgb()
"""(42, 3) uint8 colour of each joint's disc."""
BONE_RGB = FINGER_RGB[BONES[:, 2], BONES[:, 3]]
"""(40, 3) uint8 colour of each bone of `BONES`."""
POINT_RGB = torch.cat([TOOL_RGB.expand(POINTS_PER_OBJECT, 3), TARGET_RGB.expand(POINTS_PER_OBJECT, 3)])
"""(298, 3) uint8 colour of each object point: tool points, then target points."""

# All colours in one table, so every stamp carries one index into it.
_PALETTE = torch.cat([JOINT_RGB, BONE_RGB, POINT_RGB])
_JOINT_ID = torch.arange(NUM_JOINTS)
_BONE_ID = NUM_JOINTS + torch.arange(len(BONES))
_POINT_ID = NUM_JOINTS + len(BONES) + torch.arange(NUM_POINTS)

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

REFERENCE_HEIGHT = 416
"""The paper's video height, at which the radii below are chosen."""
JOINT_RADIUS, BONE_RADIUS, POINT_RADIUS = 3, 1, 1
"""Pixel radii at `REFERENCE_HEIGHT`: joints 7 px wide, bones and points 3 px wide."""


MIN_JOINT_RADIUS = 1
"""Joints are never a single pixel: a codec's latent pixel (4 or 8 px a side) smears one pixel
into its neighbours' colours, and the probes that brought joints through the codec in their
colours drew 3 x 3 px discs (docs/model.md, "What lets the motion video through the codec")."""


def stamp_radii(height: int) -> tuple[int, int, int]:
    """Integer pixel radii (joint, bone, point) at image height `height`: scaled with the
    height and rounded, joints at least `MIN_JOINT_RADIUS`, bones and points 0 (a single
    pixel) at the smallest."""
    scale = height / REFERENCE_HEIGHT
    joint, bone, point = (int(r * scale + 0.5) for r in (JOINT_RADIUS, BONE_RADIUS, POINT_RADIUS))
    return max(joint, MIN_JOINT_RADIUS), bone, point


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_motion_video(joints: torch.Tensor, points: torch.Tensor, K: torch.Tensor,
                        R: torch.Tensor, T: torch.Tensor, height: int, width: int
                        ) -> torch.Tensor:
    """Draw hand skeletons and object points, frame by frame, on black.

    Args:
        joints: (B, N, 42, 3) world hand joints (left hand first, MANO order).
        points: (B, N, 298, 3) world object points (149 tool, then 149 target).
        K, R: (B, 3, 3) intrinsics and world-to-camera rotation of each clip.
        T: (B, 3) world-to-camera translation.
    Returns:
        (B, N, height, width, 3) uint8 frames on the inputs' device.
    """
    B, N = joints.shape[:2]
    device = joints.device
    cam = [x.float()[:, None] for x in (K, R, T)]  # one camera per clip, broadcast over frames
    uv_j, z_j = project(joints.float(), *cam)
    uv_p, z_p = project(points.float(), *cam)
    uv_j, z_j, uv_p, z_p = (x.flatten(0, 1) for x in (uv_j, z_j, uv_p, z_p))
    palette = _PALETTE.to(device)
    radii = [float(r) + 0.5 for r in stamp_radii(height)]  # integer-centred discs of radius r

    out = torch.zeros(B * N * height * width, 3, dtype=torch.uint8, device=device)
    canvas = None
    for chunk in frame_chunks(B * N, height, width):
        pixel, depth, colour = _stamps(uv_j[chunk], z_j[chunk], uv_p[chunk], z_p[chunk], radii,
                                       height, width)
        if canvas is None:  # the first chunk is the largest
            canvas = blank_canvas((chunk.stop - chunk.start) * height * width, device)
        won = nearest(pixel, depth, canvas)
        out[chunk.start * height * width + pixel[won]] = palette[colour[won]]
    return out.view(B, N, height, width, 3)


def _stamps(uv_j: torch.Tensor, z_j: torch.Tensor, uv_p: torch.Tensor, z_p: torch.Tensor,
            radii: list[float], height: int, width: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of one chunk of F frames: joints, then bones, then points (the order breaks exact
    depth ties, so a joint's disc stays on top of the bones that end in it).

    Args:
        uv_j, z_j: (F, 42, 2) and (F, 42) projected joints; uv_p, z_p: (F, 298, 2) and (F, 298).
        radii: joint, bone and point disc radii in pixels.
    Returns:
        pixel (K,) int64 flat index into the chunk's frames, depth (K,) float, colour (K,)
        int64 index into the palette.
    """
    joint_r, bone_r, point_r = radii
    parts = [
        _discs(uv_j, z_j, _JOINT_ID, joint_r, height, width),
        _bones(uv_j, z_j, bone_r, height, width),
        _discs(uv_p, z_p, _POINT_ID, point_r, height, width),
    ]
    return tuple(torch.cat(x) for x in zip(*parts, strict=True))


def _discs(uv: torch.Tensor, z: torch.Tensor, colour_id: torch.Tensor, radius: float,
           height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of discs of one radius centred on the pixels that points (F, P) project to."""
    frame, index = torch.where(z > NEAR)  # behind the camera: not drawn
    flat = frame * z.shape[1] + index
    center = uv.flatten(0, 1).index_select(0, flat).round()  # the pixel the point lands in
    source, pixel, _ = discs(center, torch.full_like(center[:, 0], radius), frame, height, width)
    depth = z.flatten().index_select(0, flat).index_select(0, source)
    return pixel, depth, colour_id.to(uv.device).index_select(0, index.index_select(0, source))


def _bones(uv_j: torch.Tensor, z_j: torch.Tensor, radius: float, height: int, width: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of the 40 bones of each frame: samples 1 px apart, each a disc of `radius`."""
    parent, child = BONES[:, 0].to(uv_j.device), BONES[:, 1].to(uv_j.device)
    frame, bone = torch.where((z_j[:, parent] > NEAR) & (z_j[:, child] > NEAR))
    a, b = parent[bone], child[bone]
    uv0, uv1 = uv_j[frame, a], uv_j[frame, b]
    ones = torch.ones_like(uv0[:, 0])
    segment, t = segment_samples(uv0, uv1, ones, height, width, radius * ones)
    center = torch.lerp(uv0.index_select(0, segment), uv1.index_select(0, segment), t[:, None])
    # 1 / depth is linear in screen space, so this is the depth of the 3D point drawn there.
    inv_z = torch.lerp((1.0 / z_j[frame, a]).index_select(0, segment),
                       (1.0 / z_j[frame, b]).index_select(0, segment), t)
    source, pixel, _ = discs(center.round(), torch.full_like(t, radius),
                             frame.index_select(0, segment), height, width)
    colour = _BONE_ID.to(uv_j.device).index_select(0, bone.index_select(0, segment))
    return pixel, 1.0 / inv_z.index_select(0, source), colour.index_select(0, source)
