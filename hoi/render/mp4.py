"""Video frames <-> MP4 bytes, in memory (PyAV / libx264), and MP4 files.

Two profiles: ``"archive"`` (yuv444p, crf 10) keeps shard frames close to the source;
``"web"`` (yuv420p, even sizes) is what browsers and players expect for previews.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import av
import numpy as np

Profile = Literal["archive", "web"]


def encode_mp4(frames: np.ndarray, fps: float, profile: Profile = "archive") -> bytes:
    """frames (N, H, W, 3) uint8 -> MP4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    if profile == "web" and (h % 2 or w % 2):  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        h, w = frames.shape[1:3]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height = w, h
        if profile == "archive":
            stream.pix_fmt, stream.options = "yuv444p", {"crf": "10", "preset": "medium"}
        else:
            stream.pix_fmt, stream.options = "yuv420p", {"crf": "18", "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write frames (N, H, W, 3) uint8 as an MP4 that browsers and players open; returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(np.ascontiguousarray(frames), fps, profile="web"))
    return path


def decode_mp4(data: bytes) -> np.ndarray:
    """MP4 bytes -> frames (N, H, W, 3) uint8."""
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("the MP4 holds no video frames")
    return np.stack(frames)


def _fps_fraction(fps: float):
    from fractions import Fraction
    return Fraction(fps).limit_denominator(1000)
