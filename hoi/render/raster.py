"""The z-buffer core both renderers share: primitives -> pixel stamps -> nearest stamp per pixel.

Every primitive is expanded into *stamps*, one per pixel it covers: a disc (a joint, a point
splat, a surfel's bounding circle) covers the pixels whose centres lie within its radius, and a
line segment (a bone, a capsule's axis) is first sampled into points, each of which then
becomes a disc. A stamp is a flat pixel index ``(frame * H + row) * W + col`` into a chunk of frames, a
camera depth and the index of the primitive that made it (its *source*).

`nearest` resolves occlusion for all stamps of a chunk in one ``scatter_reduce("amin")`` over
an int64 canvas of keys ``depth_bits << 32 | stamp_index``: the bit pattern of a positive
float32 orders like its value, so the smallest key at a pixel is its nearest stamp, and the
stamp index breaks exact ties deterministically. Renderers then shade only the winners.

Everything is batched torch on the inputs' device; the only host synchronisations are the
output sizes of `repeat_interleave`, `nonzero` and boolean indexing. Pixel centres sit at integer
coordinates (see `hoi.geometry.camera`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

MIN_RADIUS = 0.71
"""Smallest disc radius in pixels: just over sqrt(1/2), so a disc always covers the pixel
nearest its centre and nothing vanishes at tiny resolutions."""

PIXEL_BUDGET = 1 << 22
"""Canvas pixels per chunk of frames: bounds the canvas and stamp memory (32 MiB of keys)."""

_NO_STAMP = torch.iinfo(torch.int64).max


def frame_chunks(num_frames: int, height: int, width: int) -> Iterator[slice]:
    """Consecutive slices of frames whose canvases together hold at most `PIXEL_BUDGET` pixels."""
    step = max(1, PIXEL_BUDGET // (height * width))
    for start in range(0, num_frames, step):
        yield slice(start, min(start + step, num_frames))


def discs(center: torch.Tensor, radius: torch.Tensor, frame: torch.Tensor, height: int,
          width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps of discs: every pixel of frame `frame` whose centre lies within `radius` of `center`.

    Each disc's bounding box is clipped to the image before it is expanded, so discs partly or
    wholly outside the image cost only what they cover.

    Args:
        center: (M, 2) float pixel coordinates (u = column, v = row), finite.
        radius: (M,) float radii in pixels, raised to at least `MIN_RADIUS`.
        frame: (M,) int64 frame of each disc within the chunk.
    Returns:
        source: (K,) int64 disc of each stamp; pixel: (K,) int64 flat pixel index;
        offset: (K, 2) float (du, dv) from the disc centre to the pixel centre.
    """
    radius = radius.clamp_min(MIN_RADIUS)
    # Keep far-away centres (points that project near infinity) from overflowing int64.
    center = center.clamp(-4.0 * (height + width), 4.0 * (height + width))
    lo = (center - radius[:, None]).ceil().long()
    hi = (center + radius[:, None]).floor().long()
    col0, row0 = lo[:, 0].clamp_min(0), lo[:, 1].clamp_min(0)
    cols = (hi[:, 0].clamp_max(width - 1) - col0 + 1).clamp_min(0)
    rows = (hi[:, 1].clamp_max(height - 1) - row0 + 1).clamp_min(0)
    count = cols * rows  # pixels in each disc's clipped bounding box
    source = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
    # Per disc: first stamp, box width, pixel of the box's top-left corner, and that corner's
    # offset from the centre; gathered per stamp in one go (gathers dominate the cost).
    corner = (frame * height + row0) * width + col0
    ints = _take(torch.stack([count.cumsum(0) - count, cols, corner], -1), source)
    floats = _take(torch.stack([col0 - center[:, 0], row0 - center[:, 1], radius.square()], -1),
                   source)
    # Walk each box row by row: `local` is a stamp's position within its box.
    local = torch.arange(len(source), device=count.device) - ints[:, 0]
    box_row = torch.div(local, ints[:, 1], rounding_mode="floor")
    box_col = local - box_row * ints[:, 1]
    offset = floats[:, :2] + torch.stack([box_col, box_row], -1)
    inside = (offset.square().sum(-1) <= floats[:, 2]).nonzero().squeeze(1)
    pixel = ints[:, 2] + box_row * width + box_col
    kept = _take(torch.stack([source, pixel], -1), inside)
    return kept[:, 0], kept[:, 1], _take(offset, inside)


def segment_samples(uv0: torch.Tensor, uv1: torch.Tensor, spacing: torch.Tensor, height: int,
                    width: int, margin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points along 2D segments, at most `spacing` pixels apart, that can touch the image.

    Each segment is first clipped (Liang-Barsky) to the image grown by `margin` pixels, the
    radius of the discs the caller stamps on the samples; a clipped segment keeps both of its
    end points, so consecutive bones meet.

    Args:
        uv0, uv1: (M, 2) float end points in pixels, finite.
        spacing: (M,) float largest distance between consecutive samples, > 0.
        margin: (M,) float pixels around the image that still matter.
    Returns:
        segment: (K,) int64 segment of each sample; t: (K,) float position along it in
        [0, 1] (0 at uv0), linear in screen space.
    """
    delta = uv1 - uv0
    lower = -margin[:, None]
    upper = torch.stack([width - 1 + margin, height - 1 + margin], -1)
    # Liang-Barsky: along each axis the segment is inside between two crossings. A segment
    # parallel to an axis gets a tiny delta instead of 0, so its crossings are huge: both
    # beyond [0, 1] (outside that slab) or of opposite signs (inside it).
    inv = 1.0 / torch.where(delta == 0, torch.full_like(delta, 1e-12), delta)
    t_a, t_b = (lower - uv0) * inv, (upper - uv0) * inv
    t0 = torch.minimum(t_a, t_b).amax(-1).clamp_min(0.0)
    t1 = torch.maximum(t_a, t_b).amin(-1).clamp_max(1.0)
    visible = t0 <= t1
    length = (t1 - t0).clamp_min(0) * delta.norm(dim=-1)
    count = torch.where(visible, (length / spacing).ceil().long() + 1, 0)
    segment = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
    step = torch.arange(len(segment), device=count.device) - _take(count.cumsum(0) - count, segment)
    frac = step.to(uv0.dtype) / (_take(count, segment) - 1).clamp_min(1).to(uv0.dtype)
    return segment, torch.lerp(_take(t0, segment), _take(t1, segment), frac)


def blank_canvas(num_pixels: int, device: torch.device | str) -> torch.Tensor:
    """(num_pixels,) int64 workspace for `nearest`: no stamp anywhere."""
    return torch.full((num_pixels,), _NO_STAMP, dtype=torch.int64, device=device)


def nearest(pixel: torch.Tensor, depth: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """Which stamps are the nearest at their pixel: exactly one per covered pixel.

    Args:
        pixel: (K,) int64 flat pixel indices into `canvas`.
        depth: (K,) float camera depths, >= 0 (negative ones count as 0).
        canvas: a `blank_canvas` of at least max(pixel) + 1 entries; left blank again, so one
            canvas serves every chunk of a render without being refilled in full.
    Returns:
        won: (K,) bool, True for the nearest stamp of each pixel (ties: the lowest index).
    """
    depth_bits = depth.float().clamp_min(0.0).contiguous().view(torch.int32).long()
    key = (depth_bits << 32) | torch.arange(len(pixel), device=pixel.device)
    canvas.scatter_reduce_(0, pixel, key, "amin")
    won = canvas.gather(0, pixel) == key
    canvas.index_fill_(0, pixel, _NO_STAMP)
    return won


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index] along the first dimension; index_select is several times faster than
    advanced indexing on CPU, and this is the hot path."""
    return values.index_select(0, index)
