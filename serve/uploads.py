"""The checks of what a submission uploads besides its image: a motion (motion_to_video), a
video (video_to_motion) and intrinsics. Each raises UploadError with the HTTP status and a
message that says what to fix; a video is checked from its container's headers and packets,
before any frame is decoded.
"""

from __future__ import annotations

import io
import json
import zipfile

import av
import numpy as np

from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS

VIDEO_CODECS = ("h264", "hevc", "mpeg4", "vp9", "av1")
"""Codecs of an accepted MP4 (what phones, ffmpeg and our own outputs write)."""
MAX_METRES = 10.0
"""Motion further than this from the camera is taken for millimetres or another unit."""


class UploadError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_video(data: bytes, frames: int, max_pixels: int) -> None:
    """An MP4 of `frames` frames of at most `max_pixels` pixels in an accepted codec: from
    the container's headers and by counting its packets, without decoding a frame."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if "mp4" not in container.format.name.split(","):
                raise UploadError(415, f"the video is {container.format.long_name}, not MP4")
            if not container.streams.video:
                raise UploadError(422, "the MP4 holds no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            if codec not in VIDEO_CODECS:
                raise UploadError(415, f"the video's codec is {codec}; send one of "
                                       f"{list(VIDEO_CODECS)}")
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels or width < 1 or height < 1:
                raise UploadError(413 if width * height > max_pixels else 422,
                                  f"the video is {width} x {height} pixels; the limit is "
                                  f"{max_pixels} pixels a frame")
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except UploadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise UploadError(415, f"the video is not an MP4 we read ({e})") from None
    if count != frames:
        raise UploadError(422, f"the video has {count} frames; this model reads {frames}")


def read_motion(data: bytes, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(joints (N, 42, 3), points (N, 298, 3)) float32 of an .npz with arrays `joints` and
    `points`, or of a motion.json (the one this app writes: lists under the same names), in
    metres in the camera frame, N the model's frames."""
    if data[:2] == b"PK":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as motion:
                joints, points = motion["joints"], motion["points"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise UploadError(422, f"the motion is not an .npz with arrays joints and points "
                                   f"({e})") from None
    else:
        try:
            motion = json.loads(data)
            joints, points = np.asarray(motion["joints"]), np.asarray(motion["points"])
        except (ValueError, KeyError, TypeError) as e:
            raise UploadError(422, f"the motion is neither an .npz nor a motion.json with "
                                   f"joints and points ({type(e).__name__}: {e})") from None
    for name, array, per_frame in (("joints", joints, NUM_JOINTS),
                                   ("points", points, NUM_POINTS)):
        if array.shape != (frames, per_frame, 3) or not np.issubdtype(array.dtype, np.number):
            raise UploadError(422, f"motion {name} must be numbers of shape ({frames}, "
                                   f"{per_frame}, 3); got {array.dtype} {array.shape}")
    joints, points = joints.astype(np.float32), points.astype(np.float32)
    if not (np.isfinite(joints).all() and np.isfinite(points).all()):
        raise UploadError(422, "the motion holds NaN or infinite values")
    far = float(max(np.abs(joints).max(), np.abs(points).max()))
    if far > MAX_METRES:
        raise UploadError(422, f"the motion reaches {far:g} from the camera; it must be in "
                               f"metres (millimetres? divide by 1000)")
    return joints, points


def parse_intrinsics(text: str) -> np.ndarray:
    """A 3 x 3 pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] given as JSON."""
    try:
        K = np.asarray(json.loads(text), dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise UploadError(422, f"K must be a 3 x 3 JSON array of numbers ({e})") from None
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise UploadError(422, f"K must be a 3 x 3 array of finite numbers; got shape "
                               f"{K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise UploadError(422, "K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, "
                               "fy > 0")
    return K.astype(np.float32)
