"""A generation's files, local or s3://, in one directory:

    video.mp4          the generated RGB video (H.264, plays in browsers)
    motion_video.mp4   the generated 3D motion drawn by Proj        (not in video_only mode)
    preview.mp4/.png   RGB | its change | motion video | overlay | 3D plot, and a sheet   (idem)
    motion.npz         joints (N, 42, 3), points (N, 298, 3) in metres, K, fps       (idem)
    motion.json        the same for the web page's 3D view, with the hand bones      (idem)
    result.json        the request and the file list, written last: its presence means
                       every other file is complete

`read_result` gives result.json back, or None while a directory is incomplete.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hoi.config import StorageConfig
from hoi.geometry.hand import BONES, JOINTS_PER_HAND
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.pipeline import Generation
from hoi.render.mp4 import write_mp4
from hoi.render.preview import write_preview
from hoi.storage import exists, join, read_text, write_bytes, write_text

RESULT_NAME = "result.json"
CONTENT_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".json": "application/json",
                 ".npz": "application/octet-stream"}


def write_generation(gen: Generation, directory: str, storage: StorageConfig,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write every file of `gen` under `directory`, result.json last; returns its content
    (request fields, `extra`, and `files`: the names written)."""
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="svimo-out-") as tmp:
        local = Path(tmp)
        write_mp4(local / "video.mp4", gen.video, gen.fps)
        if gen.joints is not None:
            write_mp4(local / "motion_video.mp4", gen.motion_video, gen.fps)
            eye, zero = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
            write_preview(local / "preview", gen.video, gen.motion_video, gen.joints,
                          gen.points, gen.K, eye, zero, gen.fps)
        files = {p.name: p.read_bytes() for p in sorted(local.iterdir())}
    if gen.joints is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, joints=gen.joints, points=gen.points, K=gen.K,
                            fps=np.float32(gen.fps))
        files["motion.npz"] = buf.getvalue()
        files["motion.json"] = json.dumps(motion_json(gen)).encode()
    for name, data in files.items():
        write_bytes(join(directory, name), data, storage)
    result = {"prompt": gen.prompt, "mode": gen.mode, "seed": gen.seed,
              "num_steps": gen.num_steps, "fps": gen.fps,
              "num_frames": int(gen.video.shape[0]), **(extra or {}),
              "files": sorted(files)}
    write_text(join(directory, RESULT_NAME), json.dumps(result, indent=2), storage)
    return result


def read_result(directory: str, storage: StorageConfig) -> dict[str, Any] | None:
    """result.json of a complete generation directory, else None."""
    path = join(directory, RESULT_NAME)
    if not exists(path, storage):
        return None
    return json.loads(read_text(path, storage))


def motion_json(gen: Generation) -> dict[str, Any]:
    """The 3D motion as the web page's viewer reads it: metres, camera frame (x right, y
    down, z forward), rounded to 0.1 mm; bones as joint index pairs over both hands."""
    bones = [[h * JOINTS_PER_HAND + a, h * JOINTS_PER_HAND + b]
             for h in range(2) for a, b in BONES]
    return {"fps": gen.fps, "num_frames": int(gen.joints.shape[0]),
            "joints": np.round(gen.joints.astype(np.float64), 4).tolist(),
            "points": np.round(gen.points.astype(np.float64), 4).tolist(),
            "points_per_object": POINTS_PER_OBJECT, "bones": bones}


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
