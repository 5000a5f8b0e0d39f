"""The shared z-buffer core: disc stamps, segment samples, nearest stamp per pixel."""

from __future__ import annotations

import torch

from hoi.render.raster import blank_canvas, discs, frame_chunks, nearest, segment_samples


def test_disc_covers_pixels_within_its_radius_clipped_to_the_image():
    center = torch.tensor([[2.3, 1.6], [-50.0, 3.0], [4.5, 4.5]])
    radius = torch.tensor([1.5, 2.0, 0.1])  # the second is far outside, the third tiny
    source, pixel, offset = discs(center, radius, torch.tensor([0, 0, 1]), height=6, width=8)
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    inside = (cols - 2.3) ** 2 + (rows - 1.6) ** 2 <= 1.5**2
    assert torch.equal(pixel[source == 0].sort().values, (rows * 8 + cols)[inside])
    assert not (source == 1).any()
    # A disc smaller than a pixel still covers the pixels nearest to its centre.
    assert len(pixel[source == 2]) == 4 and (pixel[source == 2] >= 48).all()
    assert torch.allclose(offset.abs().amax(0), torch.tensor([1.3, 1.4]), atol=0.11)


def test_segment_samples_are_at_most_spacing_apart_and_clipped():
    uv0 = torch.tensor([[0.0, 0.0], [-100.0, 5.0], [-5.0, -5.0]])
    uv1 = torch.tensor([[10.0, 0.0], [100.0, 5.0], [-5.0, 50.0]])  # the last misses the image
    segment, t = segment_samples(uv0, uv1, torch.tensor([1.0, 1.0, 1.0]), 10, 20,
                                 torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(t[segment == 0] * 10, torch.arange(11.0))
    u = torch.lerp(uv0[1, 0], uv1[1, 0], t[segment == 1])
    assert torch.allclose(u[[0, -1]], torch.tensor([-1.0, 20.0])) and u.diff().max() <= 1.0 + 1e-4
    assert not (segment == 2).any()


def test_nearest_keeps_one_stamp_per_pixel_the_nearest_and_first_on_ties():
    pixel = torch.tensor([3, 3, 5, 3, 5, 7])
    depth = torch.tensor([2.0, 1.0, 0.5, 1.0, 0.5, 9.0])
    canvas = blank_canvas(8, "cpu")
    won = nearest(pixel, depth, canvas)
    assert won.tolist() == [False, True, True, False, False, True]
    assert torch.equal(canvas, blank_canvas(8, "cpu"))  # ready for the next chunk


def test_frame_chunks_cover_all_frames_within_the_pixel_budget():
    chunks = list(frame_chunks(100, 416, 624))
    assert chunks[0].start == 0 and chunks[-1].stop == 100
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert all((c.stop - c.start) * 416 * 624 <= 1 << 22 for c in chunks)
