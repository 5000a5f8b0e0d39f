"""MP4s and previews: files that decode, panels that hold what they say."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from hoi.render.mp4 import decode_mp4, write_mp4
from hoi.render.preview import (
    DIFFERENCE_GAIN,
    PANEL_HEIGHT,
    SHEET_FRAMES,
    TITLE_HEIGHT,
    preview_frames,
    write_driven_gallery,
    write_motion_gallery,
    write_preview,
)
from tests.render.scene import table_camera, two_hands

N, H, W = 5, 32, 48


@pytest.fixture(scope="module")
def clip() -> dict[str, np.ndarray]:
    """A small clip: random frames, a black motion video with one coloured block, motion."""
    rng = np.random.default_rng(0)
    motion_video = np.zeros((N, H, W, 3), np.uint8)
    motion_video[:, 10:14, 20:30] = (255, 0, 200)
    K, R, T = (x[0].numpy() for x in table_camera(H, W))
    return {
        "video": rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8),
        "motion_video": motion_video,
        "joints": two_hands()[None] + rng.normal(0, 0.01, (N, 42, 3)),
        "points": rng.normal(0, 0.05, (N, 298, 3)) + (0, 0.2, 0.05),
        "K": K, "R": R, "T": T,
    }


def test_write_mp4_decodes_to_the_same_frames(tmp_path):
    frames = np.zeros((7, 33, 47, 3), np.uint8)  # odd sizes: padded to even for yuv420p
    frames[:, :16] = (200, 40, 40)
    path = write_mp4(tmp_path / "sub" / "clip.mp4", frames, fps=8)
    decoded = decode_mp4(path.read_bytes())
    assert decoded.shape == (7, 34, 48, 3)
    assert np.abs(decoded[:, :33, :47].astype(int) - frames).mean() < 4


def test_preview_panels_show_rgb_its_change_motion_and_overlay(clip):
    frames = preview_frames(**clip, fps=8.0)
    scale = PANEL_HEIGHT // H + (PANEL_HEIGHT % H > 0)  # nearest-neighbour, 8x here
    ph, pw = H * scale, W * scale
    assert frames.shape == (N, TITLE_HEIGHT + ph, 5 * pw, 3) and frames.dtype == np.uint8
    panels = frames[:, TITLE_HEIGHT:]
    up = lambda x: x.repeat(scale, 1).repeat(scale, 2)  # noqa: E731
    np.testing.assert_array_equal(panels[:, :, :pw], up(clip["video"]))
    np.testing.assert_array_equal(panels[:, :, 2 * pw:3 * pw], up(clip["motion_video"]))
    overlay = up(clip["video"])
    overlay[:, 10 * scale:14 * scale, 20 * scale:30 * scale] = (255, 0, 200)
    np.testing.assert_array_equal(panels[:, :, 3 * pw:4 * pw], overlay)
    plot = panels[:, :, 4 * pw:]
    assert (plot.reshape(N, -1, 3).std(1) > 5).all()  # something is drawn in 3D
    assert frames[:, :TITLE_HEIGHT].max() > 128  # labels


def test_write_preview_writes_video_and_contact_sheet(clip, tmp_path):
    mp4, png = write_preview(tmp_path / "preview", **clip, fps=8.0)
    assert (mp4.name, png.name) == ("preview.mp4", "preview.png")
    video = decode_mp4(mp4.read_bytes())
    sheet = iio.imread(png)
    assert len(video) == N
    assert sheet.shape == (SHEET_FRAMES * video.shape[1], video.shape[2], 3)


def test_motion_gallery_shows_last_frames_and_both_motions(tmp_path):
    """Rows = clips; panels: true | generated | true + true motion | true + generated motion,
    each the clip's last frame upscaled."""
    rng = np.random.default_rng(1)
    video, generated = (rng.integers(0, 256, (2, N, H, W, 3), np.uint8) for _ in range(2))
    truth, guess = (np.zeros((2, N, H, W, 3), np.uint8) for _ in range(2))
    truth[:, -1, 2:4, 5:7] = 255        # the true motion's pixels, last frame only
    guess[:, -1, 20:22, 30:32] = 200    # the generated motion's, elsewhere
    path = write_motion_gallery(tmp_path / "g.png", video, generated, truth, guess)
    s = -(-PANEL_HEIGHT // H)
    picture = iio.imread(path)
    assert picture.shape == (2 * s * H, 4 * s * W, 3)
    panels = picture.reshape(2, H, s, 4, W, s, 3)[:, :, 0, :, :, 0]  # (clip, H, panel, W, 3)
    np.testing.assert_array_equal(panels[:, :, 0], video[:, -1])
    np.testing.assert_array_equal(panels[:, :, 1], generated[:, -1])
    for panel, (drawn, (r, c)) in ((2, (truth, (2, 5))), (3, (guess, (20, 30)))):
        np.testing.assert_array_equal(panels[:, r, panel, c], drawn[:, -1, r, c])
        mask = ~drawn[:, -1].any(-1)  # elsewhere: the true frame
        np.testing.assert_array_equal(panels[:, :, panel][mask], video[:, -1][mask])


def test_driven_gallery_lights_up_where_the_two_driven_videos_differ(tmp_path):
    """Rows = clips; panels: own motion | its video | other motion | its video | the difference,
    DIFFERENCE_GAIN x the largest channel difference of the last frames, saturating at 255."""
    rng = np.random.default_rng(2)
    motion, other_motion, driven = (rng.integers(0, 256, (2, N, H, W, 3), np.uint8)
                                    for _ in range(3))
    driven[:, -1, 3, 4, 1] = 100
    driven[:, -1, 7, 9] = 0
    other_driven = driven.copy()
    other_driven[:, -1, 3, 4, 1] = 110     # a small difference, in one channel
    other_driven[:, -1, 7, 9] = 200        # a large one, saturating
    other_driven[:, 0, 10, 10] = 0          # earlier frames do not count
    path = write_driven_gallery(tmp_path / "d.png", motion, driven, other_motion, other_driven)
    s = -(-PANEL_HEIGHT // H)
    picture = iio.imread(path)
    assert picture.shape == (2 * s * H, 5 * s * W, 3)
    panels = picture.reshape(2, H, s, 5, W, s, 3)[:, :, 0, :, :, 0]
    for i, x in enumerate((motion, driven, other_motion, other_driven)):
        np.testing.assert_array_equal(panels[:, :, i], x[:, -1])
    difference = panels[:, :, 4]
    assert (difference[:, 3, 4] == DIFFERENCE_GAIN * 10).all()
    assert (difference[:, 7, 9] == 255).all()
    rest = np.ones((H, W), bool)
    rest[3, 4] = rest[7, 9] = False
    assert (difference[:, rest] == 0).all()


def test_the_change_panel_lights_up_where_the_video_moved_since_its_first_frame(clip):
    """A block that moves across a still background: the change panel is black where nothing
    moved (the whole first frame included) and bright where the block left and arrived."""
    video = np.full((3, H, W, 3), 90, np.uint8)
    for i, x in enumerate((4, 14, 24)):
        video[i, 8:16, x:x + 8] = (90, 200, 90)
    frames = preview_frames(video, np.zeros_like(video), clip["joints"][:3],
                            clip["points"][:3], clip["K"], clip["R"], clip["T"])
    scale = frames.shape[2] // (5 * W)
    change = frames[:, TITLE_HEIGHT:, W * scale:2 * W * scale, 0][:, ::scale, ::scale]
    assert change[0].max() == 0
    moved = np.zeros((H, W), bool)
    moved[8:16, 4:12] = moved[8:16, 24:32] = True  # where it was at frame 1, where it is
    assert (change[2][moved] == np.clip(DIFFERENCE_GAIN * 110, 0, 255)).all()
    assert change[2][~moved].max() == 0
