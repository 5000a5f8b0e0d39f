"""RGB frames of synthetic clips: shaded hands and objects on a textured table.

The same cameras and the same z-buffer (`hoi.render.raster`) as the motion video, so the hands
and objects are where the motion video draws them. World frame: the table is the plane z = 0
(a square of `TABLE_HALF_SIZE` around the origin), z points up, everything sits on or above
the table; the wall colour fills whatever the rays of the camera do not hit on the table.

What is drawn, back to front:

- the table, per pixel: the ray through the pixel centre meets z = 0 at a point whose pattern
  (in metres, so it recedes with depth) picks between the two table colours; the pattern fades
  to its mean where a pixel covers more than a fraction of its period, instead of aliasing.
  `table_pattern`: 0 checker (5 cm squares), 1 stripes (3 cm bands along x), 2 wood grain.
- a soft shadow under hands and objects (their points dropped straight down onto the table);
- hands as tapered capsules along the bones, whose rounded ends are the joints' spheres, drawn
  as impostors (each pixel takes the depth and normal of the capsule's front surface), and a
  palm: a slab over a fan of triangles from the wrist to the finger bases;
- objects as surfels: discs in their tangent planes, shaded with their normals, back-facing
  ones culled, sized to close the gaps between neighbouring surfels.

Everything is Lambert-shaded from one fixed light (`LIGHT`) with an ambient term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hoi.geometry.camera import project
from hoi.geometry.hand import JOINT_RADII, JOINTS_PER_HAND, two_hand_bones
from hoi.render.raster import (
    MIN_RADIUS,
    blank_canvas,
    discs,
    frame_chunks,
    nearest,
    segment_samples,
)

NEAR = 0.01
"""Primitives nearer to (or behind) the camera plane than this many metres are not drawn."""

LIGHT = torch.tensor([0.3, -0.4, 1.0]) / math.sqrt(0.3**2 + 0.4**2 + 1.0)
"""Unit world direction towards the light: high above, a little to the right and front."""
AMBIENT = 0.35
"""Fraction of the albedo lit regardless of the normal."""

TABLE_HALF_SIZE = 1.0
"""The table covers |x|, |y| <= this many metres."""
TABLE_PATTERNS = ("checker", "stripes", "wood")
"""Names of the `table_pattern` codes 0, 1, 2."""
_PATTERN_PERIOD = torch.tensor([0.10, 0.06, 0.012])  # metres after which each pattern repeats

SHADOW_STRENGTH = 0.45
"""Darkening of the table right under a hand or object touching it."""
SHADOW_FALLOFF = 0.25
"""Metres of height over which a point's shadow fades by a factor e."""
_SHADOW_RADIUS = 0.015  # metres around each dropped point; blurred afterwards
_SHADOW_SCALE = 4  # the shadow mask is computed at 1/4 resolution and blurred: it is soft anyway

JOINT_RADIUS = torch.tensor(JOINT_RADII * 2)
"""(42,) sphere radius in metres of each joint of both hands; bones interpolate between the
radii of their two joints."""
BONES = torch.tensor([(p, c) for p, c, _, _ in two_hand_bones()])
"""(40, 2) (parent, child) joints of each bone of both hands."""
PALM_FAN = (13, 1, 4, 10, 7)
"""Joints (of one hand) the palm's triangle fan from the wrist passes through: thumb base, then
the index, middle, ring and pinky bases, so the palm spans thumb web to little finger."""
_PALM_TRIANGLES = [(0, a, b) for a, b in zip(PALM_FAN[:-1], PALM_FAN[1:], strict=True)]
PALM_SUBDIVISIONS = 8
"""Steps along each palm triangle edge of the grid of discs that fills it."""
PALM_THICKNESS = 0.8
"""Half thickness of the palm slab in joint radii: the bones' capsules bulge out of it."""
SURFEL_GAP_FACTOR = 2.0
"""Surfel splat radius in multiples of the 90th percentile of the nearest-surfel distance: for
area-uniform random samples this closes all but the rarest holes."""
SURFEL_DEPTH_PENALTY = 0.5
"""Depth added at a surfel's rim, in splat radii (quadratic from its centre): outweighs the
lead of a neighbour's tangent plane on surfaces curved less than a splat radius."""


def render_rgb(joints: torch.Tensor, surfels: torch.Tensor, normals: torch.Tensor,
               surfel_rgb: torch.Tensor, skin_rgb: torch.Tensor, table_rgb: torch.Tensor,
               wall_rgb: torch.Tensor, table_pattern: torch.Tensor, K: torch.Tensor,
               R: torch.Tensor, T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Render RGB frames of hands and objects over a table.

    Args:
        joints: (B, N, 42, 3) world hand joints (left hand first, MANO order).
        surfels: (B, N, S, 3) world points on the surfaces of both objects, per frame.
        normals: (B, N, S, 3) unit outward surface normals at the surfels.
        surfel_rgb: (B, S, 3) surfel albedo in [0, 1].
        skin_rgb: (B, 3) skin albedo in [0, 1].
        table_rgb: (B, 2, 3) the table pattern's two colours in [0, 1].
        wall_rgb: (B, 3) background colour in [0, 1].
        table_pattern: (B,) int64 index into `TABLE_PATTERNS`.
        K, R: (B, 3, 3) intrinsics and world-to-camera rotation; T: (B, 3) translation.
    Returns:
        (B, N, height, width, 3) uint8 frames on the inputs' device.
    """
    B, N = joints.shape[:2]
    device = joints.device
    K, R, T = K.float(), R.float(), T.float()
    # 1. Per clip: the background and the splat size of its surfels; light in camera axes.
    background, table_hit = _background(table_rgb.float(), wall_rgb.float(), table_pattern,
                                        K, R, T, height, width)
    surfel_radius = _surfel_radius(surfels[:, 0].float())
    light = R @ LIGHT.to(device)  # (B, 3)

    # 2. Per frame (flattened to B * N frames, drawn in chunks): the clip each frame is from.
    clip = torch.arange(B, device=device).repeat_interleave(N)
    joints, surfels, normals = (x.float().flatten(0, 1) for x in (joints, surfels, normals))
    frame_pixels = height * width
    out = torch.empty(B * N, height, width, 3, dtype=torch.uint8, device=device)
    canvas = None
    for chunk in frame_chunks(B * N, height, width):
        c = clip[chunk]
        cam = (K[c], R[c], T[c])
        # 3. The table darkened by shadows, or the wall.
        shade = 1.0 - SHADOW_STRENGTH * _shadow(joints[chunk], surfels[chunk], *cam,
                                                height, width)
        frames = (background[c] * torch.where(table_hit[c], shade, 1.0)[..., None]).flatten(0, 2)
        # 4. Hands and objects through the z-buffer; albedo of a stamp: skin of its frame
        # (hands) or colour of its surfel (objects), rows of one table.
        hand = _hand_stamps(joints[chunk], *cam, height, width)
        objects = _surfel_stamps(surfels[chunk], normals[chunk], surfel_radius[c], *cam,
                                 height, width)
        albedo = torch.cat([skin_rgb.float()[c], surfel_rgb.float()[c].flatten(0, 1)])
        albedo_id = torch.cat([hand[0] // frame_pixels, len(c) + objects[3]])
        pixel, depth, normal = (torch.cat(parts) for parts in zip(hand, objects[:3], strict=True))
        if canvas is None:  # the first chunk is the largest
            canvas = blank_canvas(len(frames), device)
        won = nearest(pixel, depth, canvas).nonzero().squeeze(1)
        # 5. Shade the winners only.
        pixel = pixel[won]
        frames[pixel] = _lambert(albedo[albedo_id[won]], normal[won],
                                 light[c][pixel // frame_pixels])
        out[chunk] = (frames * 255).round().clamp(0, 255).to(torch.uint8).view(-1, height, width, 3)
    return out.view(B, N, height, width, 3)


def _lambert(albedo: torch.Tensor, normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """(K, 3) colours of surfaces of albedo (K, 3) with unit normals (K, 3) lit from (K, 3)."""
    diffuse = (normal * light).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo * (AMBIENT + (1.0 - AMBIENT) * diffuse)


# ---------------------------------------------------------------------------------------------
# Background: table and wall, once per clip
# ---------------------------------------------------------------------------------------------


def _background(table_rgb: torch.Tensor, wall_rgb: torch.Tensor, table_pattern: torch.Tensor,
                K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int, width: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Table and wall of each clip: (B, H, W, 3) colours in [0, 1] and (B, H, W) bool, True
    where the pixel sees the table."""
    device = K.device
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                          torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], -1)  # (H, W, 3) homogeneous pixel centres
    # Ray of each pixel in world axes: R^T K^-1 (u, v, 1), from the camera centre -R^T T.
    rays = pixels[None] @ (torch.linalg.inv(K).transpose(1, 2) @ R)[:, None]  # (B, H, W, 3)
    origin = -(R.transpose(1, 2) @ T[..., None])[..., 0]  # (B, 3)
    dz = rays[..., 2]
    t = -origin[:, 2, None, None] / torch.where(dz < 0, dz, torch.full_like(dz, -1e-9))
    hit = origin[:, None, None, :2] + t[..., None] * rays[..., :2]  # (B, H, W, 2) on z = 0
    on_table = (dz < 0) & (hit.abs() <= TABLE_HALF_SIZE).all(-1)

    # Pattern value in [0, 1], faded to 0.5 where a pixel spans too much of a period: a
    # pixel's footprint on the table is its distance / focal length, stretched by the slant.
    pattern = _table_patterns(hit)  # (3, B, H, W)
    period = _PATTERN_PERIOD.to(device)[table_pattern]
    value = pattern.gather(0, table_pattern.view(1, -1, 1, 1).expand(1, *pattern.shape[1:]))[0]
    distance = t * rays.norm(dim=-1)
    slant = (-dz / rays.norm(dim=-1)).clamp_min(0.05)
    footprint = distance / (0.5 * (K[:, 0, 0] + K[:, 1, 1]))[:, None, None] / slant
    fade = (2.0 - 4.0 * footprint / period[:, None, None]).clamp(0.0, 1.0)
    value = 0.5 + (value - 0.5) * fade
    table = torch.lerp(table_rgb[:, None, None, 0], table_rgb[:, None, None, 1], value[..., None])
    table = table * (AMBIENT + (1.0 - AMBIENT) * LIGHT[2].item())  # Lambert, normal +z
    wall = wall_rgb[:, None, None].expand_as(table)
    return torch.where(on_table[..., None], table, wall), on_table


def _table_patterns(xy: torch.Tensor) -> torch.Tensor:
    """(3, ...) values in [0, 1] of the checker, stripes and wood patterns at table points
    xy (..., 2) in metres."""
    x, y = xy.unbind(-1)
    checker = (torch.floor(x / 0.05) + torch.floor(y / 0.05)).remainder(2)
    stripes = torch.floor(y / 0.03).remainder(2)
    # Wood: grain lines along x, 1.2 cm apart, bent by slow waves and a faster ripple.
    phase = y / 0.012 + 0.8 * torch.sin(x / 0.11) + 0.25 * torch.sin(x / 0.023 + y / 0.05)
    wood = (0.5 + 0.5 * torch.cos(2 * math.pi * phase)) ** 3
    return torch.stack([checker, stripes, wood])


def _shadow(joints: torch.Tensor, surfels: torch.Tensor, K: torch.Tensor, R: torch.Tensor,
            T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, H, W) shadow in [0, 1] cast on the table by joints (F, 42, 3) and surfels (F, S, 3):
    each point dropped onto z = 0 darkens a blurred disc there, less the higher it is."""
    points = torch.cat([joints, surfels], 1)
    ground = torch.cat([points[..., :2], torch.zeros_like(points[..., 2:])], -1)
    uv, z = project(ground, K, R, T)
    small_h, small_w = -(-height // _SHADOW_SCALE), -(-width // _SHADOW_SCALE)
    # Pixel centres of the 1/4 grid sit at (u + 0.5) / 4 - 0.5, as in a box downsampling.
    uv = (uv + 0.5) / _SHADOW_SCALE - 0.5
    frame, index = torch.where(z > NEAR)
    focal = (0.5 * (K[:, 0, 0] + K[:, 1, 1]) / _SHADOW_SCALE)[frame]
    radius = focal * _SHADOW_RADIUS / z[frame, index]
    source, pixel, _ = discs(uv[frame, index], radius, frame, small_h, small_w)
    weight = torch.exp(-points[frame, index, 2].clamp_min(0) / SHADOW_FALLOFF)[source]
    mask = torch.zeros(len(joints) * small_h * small_w, device=joints.device)
    mask.scatter_reduce_(0, pixel, weight, "amax")
    mask = F.avg_pool2d(mask.view(-1, 1, small_h, small_w), 5, stride=1, padding=2,
                        count_include_pad=False)
    return F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


# ---------------------------------------------------------------------------------------------
# Hands: capsule impostors and palms
# ---------------------------------------------------------------------------------------------


def _hand_stamps(joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                 height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of both hands of F frames (joints (F, 42, 3), one camera per frame): the bones'
    capsules, whose end caps are the joints' spheres, then the palms.

    Returns:
        pixel (K,) int64 flat index into the chunk's frames; depth (K,) of the visible surface;
        normal (K, 3) unit normal there, camera axes.
    """
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    uv, z = project(joints, K, R, T)
    radius = JOINT_RADIUS.to(joints.device).expand_as(z)
    parent, child = BONES[:, 0].to(joints.device), BONES[:, 1].to(joints.device)
    frame, bone = torch.where((z[:, parent] > NEAR) & (z[:, child] > NEAR))
    a, b = parent[bone], child[bone]
    capsules = _capsule_stamps(uv[frame, a], z[frame, a], radius[frame, a], uv[frame, b],
                               z[frame, b], radius[frame, b], focal[frame], frame, height, width)
    palms = _palm_stamps(joints, K, R, T, height, width)
    return tuple(torch.cat(parts) for parts in zip(capsules, palms, strict=True))


def _capsule_stamps(uv0: torch.Tensor, z0: torch.Tensor, r0: torch.Tensor, uv1: torch.Tensor,
                    z1: torch.Tensor, r1: torch.Tensor, focal: torch.Tensor, frame: torch.Tensor,
                    height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of M tapered capsules between projected end points.

    Each capsule is an impostor: a pixel takes the depth and normal of the capsule's front
    surface over the nearest point of its screen-space axis (beyond the ends: of the end
    sphere), so overlapping stamps of one capsule agree and no seams show. Discs one radius
    apart along the axis, a little wider than the capsule, cover it.

    Args:
        uv0, uv1: (M, 2) end points in pixels; z0, z1: (M,) their depths (> 0); r0, r1: (M,)
            world radii at both ends; focal: (M,) focal length in pixels; frame: (M,) int64.
    Returns:
        pixel (K,) int64; depth (K,); normal (K, 3) camera axes.
    """
    px0, px1 = focal * r0 / z0, focal * r1 / z1  # pixel radii at both ends
    step = torch.minimum(px0, px1).clamp_min(0.5)
    reach = torch.maximum(px0, px1)
    segment, t = segment_samples(uv0, uv1, step, height, width, reach)
    center = torch.lerp(uv0[segment], uv1[segment], t[:, None])
    cover = (reach.square() + (step / 2).square()).sqrt()[segment]  # no gaps between samples
    source, pixel, offset = discs(center, cover, frame[segment], height, width)
    # What each stamp needs of its capsule, gathered at once (gathers dominate the cost).
    capsule = torch.cat([uv0, uv1 - uv0, 1 / z0[:, None], 1 / z1[:, None], r0[:, None],
                         r1[:, None], focal[:, None]], -1)
    capsule = capsule.index_select(0, segment.index_select(0, source))
    start, axis, inv_z0, inv_z1, r0, r1, focal = capsule.split([2, 2, 1, 1, 1, 1, 1], -1)
    position = center.index_select(0, source) + offset  # the pixel centre
    # Nearest point of the axis: screen-space fraction a, then its depth and radius
    # (1 / depth is linear in screen space; w1 * z is the fraction along the 3D bone).
    a = ((position - start) * axis).sum(-1, keepdim=True)
    a = (a / axis.square().sum(-1, keepdim=True).clamp_min(1e-12)).clamp(0.0, 1.0)
    w0, w1 = (1 - a) * inv_z0, a * inv_z1
    z = 1.0 / (w0 + w1)
    r = torch.lerp(r0, r1, w1 * z)
    d = (position - start - a * axis) / (focal * r / z).clamp_min(MIN_RADIUS)
    inside = (d.square().sum(-1) <= 1.0).nonzero().squeeze(1)
    d, z, r = torch.cat([d, z, r], -1).index_select(0, inside).split([2, 1, 1], -1)
    h = (1.0 - d.square().sum(-1, keepdim=True)).sqrt()
    normal = F.normalize(torch.cat([d, -h], -1), dim=-1)
    return pixel.index_select(0, inside), (z - r * h)[:, 0], normal


def _palm_stamps(joints: torch.Tensor, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                 height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of both palms of F frames (joints (F, 42, 3)): a slab through the palm joints
    whose face towards the camera is tiled with discs, shaded with one normal per palm.

    Returns:
        pixel (K,) int64; depth (K,); normal (K, 3) camera axes.
    """
    centres, cover, thickness, hand = _palm(joints)
    # Palm normal from the wrist and the index and pinky bases, turned towards the camera.
    wrist, index, pinky = (joints[:, [j, j + JOINTS_PER_HAND]] for j in (0, 1, 7))
    normal = torch.linalg.cross(index - wrist, pinky - wrist, dim=-1) @ R.transpose(1, 2)
    towards = (normal * (wrist @ R.transpose(1, 2) + T[:, None])).sum(-1, keepdim=True) < 0
    normal = F.normalize(torch.where(towards, normal, -normal), dim=-1)[:, hand]  # (F, P, 3)
    # The face: half the slab's thickness in front of the joints' plane.
    face = centres @ R.transpose(1, 2) + T[:, None] + thickness[:, None] * normal
    frame, point = torch.where(face[..., 2] > NEAR)
    normal = normal[frame, point]
    source, pixel, depth = _oriented_discs(face[frame, point], normal, cover[frame, point],
                                           frame, K, height, width)
    return pixel, depth, normal.index_select(0, source)


def _palm(joints: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Points filling the palms: a grid of barycentric points on each triangle (wrist, fan[i],
    fan[i + 1]) of `PALM_FAN`, for both hands.

    Returns:
        centres (F, P, 3) world; cover (F, P) disc radius in metres that closes the grid
        (longest edge of the triangle's grid cells / sqrt(3), a cell's largest circumradius);
        thickness (P,) half thickness in metres; hand (P,) int64 (0 left, 1 right).
    """
    n = PALM_SUBDIVISIONS
    grid = torch.tensor([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)],
                        dtype=joints.dtype, device=joints.device) / n  # (G, 3) barycentric
    triangles = torch.tensor([(h * JOINTS_PER_HAND + a, h * JOINTS_PER_HAND + b,
                               h * JOINTS_PER_HAND + c)
                              for h in range(2) for a, b, c in _PALM_TRIANGLES],
                             device=joints.device)  # (2 hands x 4, 3) joint indices
    corners = joints[:, triangles]  # (F, 8, 3, 3)
    centres = torch.einsum("gk,ftkc->ftgc", grid, corners).flatten(1, 2)
    edges = (corners - corners.roll(1, dims=2)).norm(dim=-1).amax(-1)  # (F, 8) longest edge
    cover = (edges / (n * math.sqrt(3))).repeat_interleave(len(grid), dim=1)
    thickness = PALM_THICKNESS * (JOINT_RADIUS.to(joints.device)[triangles] @ grid.T).flatten()
    hand = torch.arange(2, device=joints.device).repeat_interleave(len(thickness) // 2)
    return centres, cover, thickness, hand


# ---------------------------------------------------------------------------------------------
# Objects: surfels
# ---------------------------------------------------------------------------------------------


def _surfel_radius(surfels: torch.Tensor) -> torch.Tensor:
    """(B,) splat radius in metres closing the gaps between the surfels (B, S, 3) of a frame:
    `SURFEL_GAP_FACTOR` x the 90th percentile of each surfel's nearest-neighbour distance."""
    radii = []
    for points in surfels:
        if len(points) < 2:  # no gaps to close
            radii.append(points.new_zeros(()))
            continue
        # Distance to the nearest other surfel (the nearest of all is the surfel itself),
        # a block of rows at a time to bound the memory of the distance matrix.
        nearest_distance = torch.cat([torch.cdist(rows, points).topk(2, largest=False).values[:, 1]
                                      for rows in points.split(1024)])
        radii.append(SURFEL_GAP_FACTOR * nearest_distance.quantile(0.9))
    return torch.stack(radii)


def _surfel_stamps(surfels: torch.Tensor, normals: torch.Tensor, radius: torch.Tensor,
                   K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int, width: int
                   ) -> tuple[torch.Tensor, ...]:
    """Stamps of the front-facing surfels (F, S, 3) of F frames, world splat radius (F,).

    Returns:
        pixel (K,) int64; depth (K,); normal (K, 3) camera axes; surfel (K,) int64 index
        frame * S + s of the surfel.
    """
    normal = normals @ R.transpose(1, 2)  # camera axes
    position = surfels @ R.transpose(1, 2) + T[:, None]
    # Front-facing: the normal points back towards the camera (slack keeps silhouettes whole).
    facing = (normal * F.normalize(position, dim=-1)).sum(-1) < 0.2
    visible = ((position[..., 2] > NEAR) & facing).flatten().nonzero().squeeze(1)
    frame = torch.div(visible, surfels.shape[1], rounding_mode="floor")
    normal = normal.flatten(0, 1).index_select(0, visible)
    source, pixel, depth = _oriented_discs(position.flatten(0, 1).index_select(0, visible),
                                           normal, radius.index_select(0, frame), frame, K,
                                           height, width)
    return pixel, depth, normal.index_select(0, source), visible.index_select(0, source)


def _oriented_discs(center: torch.Tensor, normal: torch.Tensor, radius: torch.Tensor,
                    frame: torch.Tensor, K: torch.Tensor, height: int, width: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of M discs lying in 3D planes (surfels, palm tiles).

    A pixel is covered where its ray meets the disc's plane within the radius (an ellipse on
    screen, so silhouettes follow the surface instead of bulging by a radius), at the depth of
    that meeting point plus `SURFEL_DEPTH_PENALTY`; every disc covers at least its own pixel,
    so nothing vanishes at low resolutions.

    Args:
        center: (M, 3) camera-axes centres (depth > NEAR); normal: (M, 3) unit normals;
        radius: (M,) world radii; frame: (M,) int64; K: (F, 3, 3) intrinsics of the frames.
    Returns:
        source (K,) int64 disc of each stamp; pixel (K,) int64; depth (K,).
    """
    principal, focal = K[frame, :2, 2], K[frame][:, [0, 1], [0, 1]]  # (M, 2) each
    z = center[:, 2:]
    uv = center[:, :2] / z * focal + principal
    # A disc of radius r at depth z projects within f r / (z - r) of its centre.
    reach = focal.mean(-1) * radius / (z[:, 0] - radius).clamp_min(NEAR)
    source, pixel, offset = discs(uv, reach, frame, height, width)
    # What each stamp needs of its disc, gathered at once (gathers dominate the cost).
    disc = torch.cat([uv, principal, focal, normal, center, radius[:, None]], -1)
    uv, principal, focal, normal, center, radius = (
        disc.index_select(0, source).split([2, 2, 2, 3, 3, 1], -1))
    t = _ray_plane(uv + offset, principal, focal, normal, center)
    spread = (t * _ray(uv + offset, principal, focal) - center).square().sum(-1, keepdim=True)
    spread = spread / radius.square()
    on_disc = spread <= 1.0
    keep = (on_disc | (offset.square().sum(-1, keepdim=True) <= MIN_RADIUS**2))
    keep = keep[:, 0].nonzero().squeeze(1)
    # On a curved surface a neighbour's tangent plane lies in front of the surface; the depth
    # penalty makes the disc nearest to the ray win instead, as on a flat one.
    depth = torch.where(on_disc, t + SURFEL_DEPTH_PENALTY * radius * spread, center[:, 2:])
    return source.index_select(0, keep), pixel.index_select(0, keep), depth[:, 0][keep]


def _ray(uv: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """(M, 3) rays K^-1 (u, v, 1) through pixels uv (M, 2), camera axes, unit depth."""
    return torch.cat([(uv - principal) / focal, torch.ones_like(uv[:, :1])], -1)


def _ray_plane(uv: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor,
               normal: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """(M, 1) depth where the rays through pixels uv (M, 2) (cameras' principal points and
    focal lengths (M, 2)) meet the planes through `point` (M, 3) with `normal` (M, 3)."""
    along = (normal * _ray(uv, principal, focal)).sum(-1, keepdim=True)
    along = torch.where(along.abs() > 1e-6, along, torch.full_like(along, 1e-6))
    return (normal * point).sum(-1, keepdim=True) / along
