"""Previews: a clip's views side by side, as MP4s and contact sheets, for people to look at.

A preview frame has five labelled panels: the RGB video | where the RGB video has changed since
its first frame (`change_since_first`, amplified: a small model's hands move faintly) | the
motion video | the overlay (the RGB frame with the motion video's non-black pixels on top, to
see that they coincide) | a 3D plot of the joints and object points in world coordinates, seen
from the camera's side, with axis limits fixed over the clip. The change panel next to the
motion video shows whether the video moves where the motion says. Small flavours are upscaled
with nearest-neighbour so that a 32 x 48 clip is still legible. Everything here takes numpy
arrays of one clip and writes local files; matplotlib draws off-screen (Agg), without pyplot's
global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Line3DCollection

from hoi.render.motion_video import BONE_RGB, BONES, JOINT_RGB, POINT_RGB
from hoi.render.mp4 import write_mp4

PANEL_HEIGHT = 240
"""Panels are upscaled by a whole factor to at least this many pixels high."""
TITLE_HEIGHT = 22
"""Pixels above the panels for their labels."""
SHEET_FRAMES = 4
"""Frames (evenly spaced, first and last included) in a preview's contact sheet."""
DIFFERENCE_GAIN = 4
"""Difference panels (a preview's change since the first frame, the driven gallery's two
videos): grey level = this x the largest channel difference."""


def preview_frames(video: np.ndarray, motion_video: np.ndarray, joints: np.ndarray,
                   points: np.ndarray, K: np.ndarray, R: np.ndarray, T: np.ndarray,
                   fps: float | None = None) -> np.ndarray:
    """Side-by-side preview frames of one clip.

    Args:
        video, motion_video: (N, H, W, 3) uint8.
        joints: (N, 42, 3) and points: (N, 298, 3) world coordinates.
        K, R: (3, 3) and T: (3,) the clip's camera: the 3D plot looks at the scene from the
            camera's direction, in perspective with the camera's vertical field of view.
        fps: frame rate, to label frames with their time as well.
    Returns:
        (N, H2, W2, 3) uint8: five panels of scale * (H, W) each under a title row.
    """
    n, h, w, _ = video.shape
    scale = _scale(h)
    ph, pw = h * scale, w * scale
    flat = (video, change_since_first(video), motion_video, overlay(video, motion_video))
    panels = np.concatenate([_upscale(x, scale) for x in flat], axis=2)

    # One figure, exactly 5 panels wide in pixels at dpi 100; the 3D axes fill the last panel.
    fig = Figure(figsize=(5 * pw / 100, (ph + TITLE_HEIGHT) / 100), dpi=100, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.8, 0.0, 0.2, ph / (ph + TITLE_HEIGHT)), projection="3d")
    labels = ("RGB", f"RGB change since frame 1 (x{DIFFERENCE_GAIN})", "motion video",
              "overlay", "3D joints + points (world, m)")
    for i, label in enumerate(labels):
        fig.text((i + 0.5) / 5, 1 - 0.5 * TITLE_HEIGHT / (ph + TITLE_HEIGHT), label,
                 color="white", ha="center", va="center", fontsize=9)
    counter = fig.text(0.005, 1 - 0.5 * TITLE_HEIGHT / (ph + TITLE_HEIGHT), "", color="0.7",
                       ha="left", va="center", fontsize=8)
    limits = _limits(joints, points)
    view = _view_angles(R, T, limits.mean(1))
    ax.set_proj_type("persp", focal_length=2 * K[1, 1] / h)  # 1 / tan(fov_y / 2)

    update = _plot_3d(ax, joints[0], points[0], limits, view)
    frames = []
    for i in range(n):
        counter.set_text(f"{i + 1}/{n}" + (f"  {i / fps:.2f} s" if fps else ""))
        update(joints[i], points[i])
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        image[TITLE_HEIGHT:TITLE_HEIGHT + ph, :4 * pw] = panels[i]
        frames.append(image)
    return np.stack(frames)


def overlay(frames: np.ndarray, motion_video: np.ndarray) -> np.ndarray:
    """Frames (..., H, W, 3) with the motion video's non-black pixels drawn on top."""
    return np.where(motion_video.any(-1, keepdims=True), motion_video, frames)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where frames a and b (..., H, W, 3) uint8 differ: `DIFFERENCE_GAIN` x the largest
    channel difference, in grey (..., H, W, 3) uint8."""
    grey = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1, keepdims=True)
    return np.repeat(np.clip(DIFFERENCE_GAIN * grey, 0, 255).astype(np.uint8), 3, axis=-1)


def change_since_first(video: np.ndarray) -> np.ndarray:
    """Each frame of a (N, H, W, 3) uint8 video against its first, as `difference` draws it:
    black where nothing moved, bright where the hands and objects did."""
    return difference(video, video[:1])


def write_motion_gallery(path: str | Path, video: np.ndarray, generated: np.ndarray,
                         motion_video: np.ndarray, generated_motion_video: np.ndarray) -> Path:
    """A PNG of one row per clip, four panels of its last frame: the true video | the
    generated video | the true video under the true motion | the true video under the
    generated motion (so a motion placed on the wrong object, or off the hands, shows).

    Args: (B, N, H, W, 3) uint8 each; the motion videos drawn with each clip's camera."""
    last = lambda x: x[:, -1]  # noqa: E731
    return _write_rows(path, [last(video), last(generated),
                              overlay(last(video), last(motion_video)),
                              overlay(last(video), last(generated_motion_video))])


def write_driven_gallery(path: str | Path, motion_video: np.ndarray, driven: np.ndarray,
                         other_motion_video: np.ndarray, other_driven: np.ndarray) -> Path:
    """A PNG of one row per clip, five panels of its last frame: its motion video | the video
    generated from the clip's first frame and prompt under that motion | another clip's motion
    video | the video generated from the same first frame and prompt under that one | where the
    two videos differ (`difference`), so a video that follows its motion shows the hands where
    each motion puts them, and the last panel lights up there.

    Args: (B, N, H, W, 3) uint8 each."""
    last = [x[:, -1] for x in (motion_video, driven, other_motion_video, other_driven)]
    return _write_rows(path, [*last, difference(last[1], last[3])])


def _write_rows(path: str | Path, panels: list[np.ndarray]) -> Path:
    """Panels (B, H, W, 3) side by side, one row per clip, upscaled to PANEL_HEIGHT."""
    rows = _upscale(np.concatenate(panels, axis=2), _scale(panels[0].shape[1]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate(list(rows), axis=0))
    return path


def _scale(height: int) -> int:
    """Whole upscaling factor that brings a panel to at least PANEL_HEIGHT pixels."""
    return max(1, math.ceil(PANEL_HEIGHT / height))


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) frames."""
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def write_preview(path_stem: str | Path, video: np.ndarray, motion_video: np.ndarray,
                  joints: np.ndarray, points: np.ndarray, K: np.ndarray, R: np.ndarray,
                  T: np.ndarray, fps: float) -> tuple[Path, Path]:
    """Write `<stem>.mp4` (all preview frames) and `<stem>.png` (a contact sheet: rows of
    `SHEET_FRAMES` frames spread over the clip); arguments as in `preview_frames`.

    Returns the paths of the MP4 and the PNG."""
    frames = preview_frames(video, motion_video, joints, points, K, R, T, fps)
    stem = Path(path_stem)
    mp4 = write_mp4(stem.with_name(stem.name + ".mp4"), frames, fps)
    rows = np.unique(np.linspace(0, len(frames) - 1, SHEET_FRAMES).round().astype(int))
    png = stem.with_name(stem.name + ".png")
    iio.imwrite(png, np.concatenate(list(frames[rows]), axis=0))
    return mp4, png


def _limits(joints: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(3, 2) axis limits around everything in the clip, so the plot does not jump from frame
    to frame."""
    xyz = np.concatenate([joints.reshape(-1, 3), points.reshape(-1, 3)])
    xyz = xyz[np.isfinite(xyz).all(1)]
    low, high = xyz.min(0), xyz.max(0)
    margin = np.maximum(0.05 * (high - low), 0.01)
    return np.stack([low - margin, high + margin], 1)


def _view_angles(R: np.ndarray, T: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """(elevation, azimuth) in degrees of the camera as seen from the scene's centre."""
    eye = -R.T @ T
    d = eye - centre
    return (float(np.degrees(np.arctan2(d[2], np.hypot(d[0], d[1])))),
            float(np.degrees(np.arctan2(d[1], d[0]))))


def _plot_3d(ax, joints: np.ndarray, points: np.ndarray, limits: np.ndarray,
             view: tuple[float, float]) -> Callable[[np.ndarray, np.ndarray], None]:
    """Set up the 3D axes (the motion video's palette on black, fixed limits and view) with
    one frame's bones (finger colours), joints and object points (tool / target colours);
    returns update(joints, points), which moves those artists to another frame. Moving them
    instead of redrawing the axes keeps its ticks and grid: half the cost of a frame."""
    ax.set_facecolor("black")
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_pane_color((0.08, 0.08, 0.08, 1.0))
        axis.label.set_color("0.6")
        axis.set_tick_params(colors="0.6", labelsize=6)
    bones = BONES[:, :2].numpy()
    lines = Line3DCollection(joints[bones], colors=BONE_RGB.numpy() / 255, linewidths=1.5)
    ax.add_collection3d(lines)
    joint_dots = ax.scatter(*joints.T, c=JOINT_RGB.numpy() / 255, s=6, depthshade=False)
    point_dots = ax.scatter(*points.T, c=POINT_RGB.numpy() / 255, s=2, depthshade=False)
    ax.set(xlim=limits[0], ylim=limits[1], zlim=limits[2], xlabel="x", ylabel="y", zlabel="z")
    ax.set_box_aspect(limits[:, 1] - limits[:, 0], zoom=1.2)  # metres the same along all axes
    ax.view_init(*view)

    def update(joints: np.ndarray, points: np.ndarray) -> None:
        lines.set_segments(joints[bones])
        # 3D scatters have no public setter for their positions; matplotlib's own animation
        # examples assign _offsets3d.
        joint_dots._offsets3d = tuple(joints.T)
        point_dots._offsets3d = tuple(points.T)

    return update
