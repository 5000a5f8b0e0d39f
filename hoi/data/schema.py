"""The Parquet shard schemas: the single source of truth for what a shard row holds.

Clip shards (`SCHEMA`): one row per clip. Large arrays are stored as bytes + shape (+ dtype);
videos either as raw uint8 bytes or as MP4 bytes (``video_encoding``).

Latent shards (`LATENT_SCHEMA`): one row per clip of the clip shard they sit beside, in its
order: what a training step reads of the clip at one resolution, precomputed (the VAE latents,
the prompt's text features, the normalised motion and the intrinsics; `hoi.train.latents`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from hoi.data.clip import Clip, ClipError
from hoi.render.mp4 import decode_mp4, encode_mp4

SCHEMA_VERSION = 1
VIDEO_ENCODINGS = ("raw", "mp4")


ARRAYS = (
    "video",         # (N, H, W, 3) uint8, raw or MP4
    "motion_video",  # (N, H, W, 3) uint8, raw or MP4
    "joints",        # (N, 42, 3) float32
    "points",        # (N, 298, 3) float32
)
"""Arrays of a clip row, each stored as three columns: `name` (bytes), `name_shape`,
`name_dtype`."""
VIDEOS = ("video", "motion_video")

SCALARS: dict[str, pa.DataType] = {
    "clip_id": pa.string(),
    "prompt": pa.string(),
    "action": pa.string(),
    "tool": pa.string(),
    "target": pa.string(),
    "split": pa.string(),
    "source": pa.string(),
    "seed": pa.int64(),
    "fps": pa.float64(),
    "video_encoding": pa.string(),
    "camera_K": pa.list_(pa.float32(), 9),
    "camera_R": pa.list_(pa.float32(), 9),
    "camera_T": pa.list_(pa.float32(), 3),
}


def _array_fields(name: str) -> list[pa.Field]:
    return [pa.field(name, pa.binary(), nullable=False),
            pa.field(f"{name}_shape", pa.list_(pa.int64()), nullable=False),
            pa.field(f"{name}_dtype", pa.string(), nullable=False)]


SCHEMA = pa.schema(
    [pa.field(name, t, nullable=False) for name, t in SCALARS.items()]
    + [f for name in ARRAYS for f in _array_fields(name)],
    metadata={"svimo_schema_version": str(SCHEMA_VERSION)},
)
REQUIRED_COLUMNS = tuple(f.name for f in SCHEMA if not f.nullable)

LATENT_ARRAYS = (
    "video_latent",   # (F, C, h, w) z_0^V: the video's VAE latent
    "motion_latent",  # (F, C, h, w) z_0^M: the motion video's VAE latent
    "image_latent",   # (1, C, h, w) z_I: the noise-augmented first frame's VAE latent
    "text",           # (L, D) the prompt's text-encoder features
    "motion",         # (N, 340, 3) float32 normalised camera-frame joints + points
    "K",              # (3, 3) float32 intrinsics at the latents' resolution
)
LATENT_SCHEMA = pa.schema(
    [pa.field("clip_id", pa.string(), nullable=False), pa.field("prompt", pa.string(),
                                                                nullable=False)]
    + [f for name in LATENT_ARRAYS for f in _array_fields(name)],
    metadata={"svimo_schema_version": str(SCHEMA_VERSION)},
)
LATENT_COLUMNS = tuple(f.name for f in LATENT_SCHEMA)


def missing_columns(schema: pa.Schema, required: tuple[str, ...] = REQUIRED_COLUMNS
                    ) -> list[str]:
    """Required columns absent from a file's schema."""
    return [name for name in required if name not in schema.names]


# ---------------------------------------------------------------------------------------------
# Clip <-> row
# ---------------------------------------------------------------------------------------------


def _put_array(row: dict[str, Any], name: str, value: np.ndarray | None, data: bytes | None = None):
    if value is None:
        row[name] = row[f"{name}_shape"] = row[f"{name}_dtype"] = None
        return
    row[name] = data if data is not None else np.ascontiguousarray(value).tobytes()
    row[f"{name}_shape"] = list(value.shape)
    row[f"{name}_dtype"] = str(value.dtype)


def clip_to_row(clip: Clip, video_encoding: str = "raw") -> dict[str, Any]:
    """A validated clip as one shard row (a dict of the SCHEMA's columns)."""
    if video_encoding not in VIDEO_ENCODINGS:
        raise ValueError(f"video_encoding must be one of {VIDEO_ENCODINGS}, got {video_encoding!r}")
    clip.validate()
    if clip.video is None or clip.motion_video is None:
        raise ClipError("a shard row needs both the video and the motion video")
    row: dict[str, Any] = {name: getattr(clip, name) for name in
                           ("clip_id", "prompt", "action", "tool", "target", "split", "source")}
    row.update(seed=int(clip.seed), fps=float(clip.fps), video_encoding=video_encoding,
               camera_K=clip.K.reshape(-1).tolist(), camera_R=clip.R.reshape(-1).tolist(),
               camera_T=clip.T.reshape(-1).tolist())
    for name in VIDEOS:
        frames = getattr(clip, name)
        data = encode_mp4(frames, clip.fps) if video_encoding == "mp4" else None
        _put_array(row, name, frames, data)
    _put_array(row, "joints", clip.joints)
    _put_array(row, "points", clip.points)
    return row


def latents_to_row(clip_id: str, prompt: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """One clip's precomputed training inputs (`LATENT_ARRAYS`) as a latent shard row."""
    row: dict[str, Any] = {"clip_id": clip_id, "prompt": prompt}
    for name in LATENT_ARRAYS:
        _put_array(row, name, np.asarray(arrays[name]))
    return row


def row_to_latents(row: dict[str, Any]) -> dict[str, Any]:
    """A latent shard row -> clip_id, prompt and its `LATENT_ARRAYS`; ClipError names a
    column whose bytes do not hold its shape."""
    arrays = {name: get_array(row, name) for name in LATENT_ARRAYS}
    missing = [name for name, value in arrays.items() if value is None]
    if missing:
        raise ClipError(f"latent columns {missing} are null")
    return {"clip_id": str(row["clip_id"]), "prompt": str(row["prompt"]), **arrays}


def get_array(row: dict[str, Any], name: str) -> np.ndarray | None:
    """Decode array column `name` of a row (None when an optional column is null)."""
    data, shape, dtype = row.get(name), row.get(f"{name}_shape"), row.get(f"{name}_dtype")
    if data is None:
        return None
    if shape is None or dtype is None:
        raise ClipError(f"{name}: bytes present but shape or dtype missing")
    shape = tuple(int(s) for s in shape)
    if name in VIDEOS and row.get("video_encoding") == "mp4":
        try:
            array = decode_mp4(bytes(data))
        except Exception as e:  # PyAV raises several error types for corrupt streams
            raise ClipError(f"{name}: MP4 bytes do not decode ({e})") from e
        if array.shape != shape:
            raise ClipError(f"{name}: decoded shape {array.shape} != stored shape {shape}")
        return array
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ClipError(f"{name}: unknown dtype {dtype!r}") from e
    expected = int(np.prod(shape)) * dt.itemsize
    if len(data) != expected:
        raise ClipError(f"{name}: {len(data)} bytes do not hold shape {shape} of {dtype} "
                        f"({expected} bytes)")
    return np.frombuffer(bytes(data), dtype=dt).reshape(shape)


def row_to_clip(row: dict[str, Any], num_frames: int | None = None, height: int | None = None,
                width: int | None = None) -> Clip:
    """Decode and validate a shard row; raises ClipError saying what is wrong."""
    encoding = row.get("video_encoding")
    if encoding not in VIDEO_ENCODINGS:
        raise ClipError(f"video_encoding must be one of {VIDEO_ENCODINGS}, got {encoding!r}")
    cam = {}
    for key, size in (("K", 9), ("R", 9), ("T", 3)):
        value = row.get(f"camera_{key}")
        if value is None or len(value) != size:
            raise ClipError(f"camera_{key}: expected {size} values, got {value!r}")
        cam[key] = np.asarray(value, np.float32).reshape((3, 3) if size == 9 else (3,))
    clip = Clip(
        clip_id=str(row.get("clip_id")), prompt=str(row.get("prompt") or ""),
        action=str(row.get("action")), tool=str(row.get("tool")), target=str(row.get("target")),
        split=str(row.get("split")), source=str(row.get("source")), seed=int(row.get("seed") or 0),
        fps=float(row.get("fps") or 0.0),
        joints=get_array(row, "joints"), points=get_array(row, "points"),
        video=get_array(row, "video"), motion_video=get_array(row, "motion_video"),
        **cam,
    )
    return clip.validate(num_frames, height, width)
