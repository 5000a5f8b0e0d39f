"""`Clip`: one prepared hand-object interaction clip in memory (numpy, world units in metres)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS


class ClipError(ValueError):
    """A clip whose arrays do not have the shapes, dtypes or values a clip must have."""


@dataclass
class Clip:
    """A clip of N frames: video, rendered motion video, 3D motion, camera, prompt.

    Shapes: video and motion_video (N, H, W, 3) uint8; joints (N, 42, 3) and points (N, 298, 3)
    float32 in metres (world frame); K, R (3, 3) and T (3,) float32 (see hoi.geometry.camera).
    """

    clip_id: str
    prompt: str
    action: str
    tool: str
    target: str
    split: str
    source: str
    seed: int
    fps: float
    joints: np.ndarray
    points: np.ndarray
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    video: np.ndarray | None = None
    motion_video: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return self.joints.shape[0]

    def validate(self, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None) -> Clip:
        """Raise ClipError naming the first array that is off; return self when all is well."""
        n = num_frames if num_frames is not None else self.num_frames
        expect = {
            "joints": ((n, NUM_JOINTS, 3), np.float32),
            "points": ((n, NUM_POINTS, 3), np.float32),
            "K": ((3, 3), np.float32), "R": ((3, 3), np.float32), "T": ((3,), np.float32),
        }
        for name in ("video", "motion_video"):
            if getattr(self, name) is not None:
                expect[name] = ((n, height or getattr(self, name).shape[1],
                                 width or getattr(self, name).shape[2], 3), np.uint8)
        for name, (shape, dtype) in expect.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
                got = (value.shape, value.dtype) if isinstance(value, np.ndarray) else type(value)
                raise ClipError(f"{name}: expected {shape} {np.dtype(dtype)}, got {got}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ClipError(f"{name}: holds NaN or infinite values")
        if not self.prompt.strip():
            raise ClipError("prompt is empty")
        if not self.fps > 0:
            raise ClipError(f"fps must be positive, got {self.fps}")
        return self
