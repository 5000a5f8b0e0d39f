"""Convert TACO sequences (Liu et al., CVPR 2024; CC BY 4.0) into clips.

Layout facts followed, from leolyliu/TACO-Instructions (README.md "Data Organization",
dataset_utils/visualization.py, dataset_utils/hand_pose_loader.py,
dataset_utils/visualize_world_coordinate_system.py, dataset_utils/manopth/manopth/manolayer.py):

- Sequences live at ``<kind>/<triplet>/<sequence>/`` for every kind below; a triplet folder is
  named ``"(action, tool, target)"``, e.g. ``"(stir, spoon, bowl)"``; sequences are named
  ``<date>_<index>``, e.g. ``20231105_019``, unique across triplets.
- ``Hand_Poses/.../{left,right}_hand.pkl``: a dict with one entry per frame (keys sort in
  frame order) holding ``hand_pose`` (48,) = global orient + 15 finger joints as full
  axis-angle (manopth ``use_pca=False``, default ``flat_hand_mean=True``) and ``hand_trans``
  (3,) in metres, stored as torch tensors. ``{left,right}_hand_shape.pkl``: ``hand_shape``
  (10,) betas. TACO's layer is built with ``center_idx=0`` and called without a translation,
  so the posed hand is moved to put its *wrist joint* at the origin and ``hand_trans`` is then
  added: the world wrist is ``hand_trans`` (not the smplx convention of translating the
  un-centred mesh). We reproduce that; manopth outputs millimetres, TACO divides by 1000.
- ``Object_Poses/.../tool_<id>.npy`` and ``target_<id>.npy``: (F, 4, 4) object-to-world poses
  per frame; ``<id>`` names the object model (e.g. ``001``), the categories come from the
  triplet. ``Object_Models/<id>_cm.obj``: the meshes in centimetres. TACO scales the
  vertices to metres *before* applying the pose (``vertices *= 0.01`` then
  ``v @ R.T + t``), so pose translations are in metres; we do the same.
- ``Allocentric_RGB_Videos/.../<camera serial>.mp4``: one 30 Hz video per camera, frame i
  annotated by pose frame i. ``Allocentric_Camera_Parameters/.../calibration.json``: a dict
  keyed by camera serial holding ``K`` (3x3, flat or nested), ``R`` (3x3) and ``T`` (3,)
  mapping world to camera, ``x_cam = R x_world + T`` in metres: our convention as is.

Choices where the sources say nothing:
- Which allocentric camera: the caller's serial, else the first video file in sorted order.
- ``K`` is taken to be in pixels of the video as stored; a principal point outside the frame is
  reported as a calibration/video mismatch rather than silently rescaled.
- TACO's ``read_hand_shape`` falls back to zero betas when a shape file is missing; we treat a
  missing file as an error, like every other missing input.
- Frames are picked from the annotated frames (30 Hz) nearest to ``start + k * 30 / fps``, with
  the window centred on the sequence; the crop is one box for the whole clip (fixed camera).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

from hoi.config import DataConfig
from hoi.data.clip import Clip
from hoi.geometry.camera import crop_resize_intrinsics, project
from hoi.geometry.mano import MANO, ManoLoadError, load_pickle, to_numpy
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.vocabulary import prompt_for

SOURCE_FPS = 30.0
"""Frame rate of TACO's annotations and allocentric videos."""
HANDS = ("left", "right")  # the order of the 42-joint layout
ROLES = ("tool", "target")  # the order of the 298-point layout
CM_TO_M = 0.01


class TacoError(ValueError):
    """A TACO sequence that cannot be converted; the message names it and what is missing."""


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TacoSequence:
    """One TACO sequence: the data set root, its triplet folder and its name."""

    root: Path
    triplet: str
    name: str

    def __str__(self) -> str:
        return f"TACO sequence {self.key}"

    @property
    def key(self) -> str:
        """"<triplet>/<name>": the sequence as a string, for tasks that pass strings around."""
        return f"{self.triplet}/{self.name}"

    def folder(self, kind: str) -> Path:
        """The sequence's folder under `kind` (e.g. "Hand_Poses")."""
        return self.root / kind / self.triplet / self.name

    @property
    def action_tool_target(self) -> tuple[str, str, str]:
        parts = [p.strip() for p in self.triplet.strip().strip("()").split(",")]
        if len(parts) != 3 or not all(parts):
            raise TacoError(f"{self}: triplet folder is not named '(action, tool, target)'")
        return parts[0], parts[1], parts[2]

    @property
    def prompt(self) -> str:
        action, tool, target = self.action_tool_target
        return prompt_for(action, target, tool)


def list_sequences(taco_root: str | Path) -> list[TacoSequence]:
    """All sequences with hand annotations under `taco_root`, sorted by triplet then name."""
    hand_poses = Path(taco_root) / "Hand_Poses"
    if not hand_poses.is_dir():
        raise TacoError(f"{taco_root} is not a TACO root: it has no Hand_Poses folder")
    return [TacoSequence(Path(taco_root), triplet.name, seq.name)
            for triplet in sorted(p for p in hand_poses.iterdir() if p.is_dir())
            for seq in sorted(p for p in triplet.iterdir() if p.is_dir())]


def sequence_from_key(taco_root: str | Path, key: str) -> TacoSequence:
    """The sequence a `TacoSequence.key` names under `taco_root`."""
    triplet, _, name = key.rpartition("/")
    if not triplet or not name:
        raise TacoError(f"{key!r} is not a TACO sequence key '<triplet>/<name>'")
    return TacoSequence(Path(taco_root), triplet, name)


def read_split_file(path: str | Path) -> dict[str, str]:
    """TACO's split list (data_lists/*train_test_split.txt: "<sequence>,<split>" lines)."""
    lines = Path(path).read_text().split()
    return dict(line.split(",", 1) for line in lines)


def load_hand_models(mano_root: str | Path) -> dict[str, MANO]:
    """The user's MANO_LEFT.pkl and MANO_RIGHT.pkl, set up as TACO used them (flat hand mean)."""
    models = {}
    for side in HANDS:
        path = Path(mano_root) / f"MANO_{side.upper()}.pkl"
        if not path.is_file():
            raise TacoError(f"missing MANO model {path} (download it from mano.is.tue.mpg.de)")
        models[side] = MANO.from_file(path, side=side, flat_hand_mean=True)
    return models


# ---------------------------------------------------------------------------------------------
# Time: which annotated frames become clip frames
# ---------------------------------------------------------------------------------------------


def resample_indices(num_source: int, num_frames: int, fps: float,
                     source_fps: float = SOURCE_FPS) -> np.ndarray:
    """Source frames nearest to ``start + k * source_fps / fps``, k < num_frames, centred.

    Returns (num_frames,) int64 indices; raises ValueError if the source is too short."""
    step = source_fps / fps
    span = (num_frames - 1) * step
    if span > num_source - 1:
        raise ValueError(f"{num_frames} frames at {fps:g} fps need {int(np.ceil(span)) + 1} "
                         f"frames at {source_fps:g} Hz, the sequence has {num_source}")
    start = (num_source - 1 - span) / 2
    return np.floor(start + np.arange(num_frames) * step + 0.5).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Reading one sequence's files
# ---------------------------------------------------------------------------------------------


def _require(path: Path, sequence: TacoSequence, what: str) -> Path:
    if not path.is_file():
        raise TacoError(f"{sequence}: missing {what} {path}")
    return path


def _load(path: Path, sequence: TacoSequence, what: str) -> Any:
    try:
        return load_pickle(_require(path, sequence, what))
    except ManoLoadError as e:
        raise TacoError(f"{sequence}: unreadable {what}: {e}") from e


def _natural_key(key: Any) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(key))]


def _read_hand(sequence: TacoSequence, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pose (F, 48), hand_trans (F, 3) in metres, betas (10,)) of one hand."""
    folder = sequence.folder("Hand_Poses")
    frames = _load(folder / f"{side}_hand.pkl", sequence, f"{side} hand poses")
    shape = _load(folder / f"{side}_hand_shape.pkl", sequence, f"{side} hand shape")
    try:
        keys = sorted(frames, key=_natural_key)
        pose = np.stack([to_numpy(frames[k]["hand_pose"]).reshape(48) for k in keys])
        trans = np.stack([to_numpy(frames[k]["hand_trans"]).reshape(3) for k in keys])
        betas = to_numpy(shape["hand_shape"]).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise TacoError(f"{sequence}: {side} hand files do not hold per-frame hand_pose (48) / "
                        f"hand_trans (3) and hand_shape (10): {e!r}") from e
    return pose.astype(np.float32), trans.astype(np.float32), betas.astype(np.float32)


def _hand_joints(model: MANO, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray
                 ) -> np.ndarray:
    """(N, 21, 3) world joints in metres, with TACO's wrist-at-hand_trans convention."""
    pose_t = torch.from_numpy(pose)
    with torch.no_grad():
        joints = model(pose_t[:, :3], pose_t[:, 3:],
                       betas=torch.from_numpy(betas).expand(len(pose), -1)).joints
    return (joints - joints[:, :1]).numpy() + trans[:, None]


def _object_pose_file(sequence: TacoSequence, role: str) -> Path:
    found = sorted(sequence.folder("Object_Poses").glob(f"{role}_*.npy"))
    if len(found) != 1:
        raise TacoError(f"{sequence}: expected one Object_Poses/{role}_<id>.npy, found "
                        f"{[p.name for p in found]} in {sequence.folder('Object_Poses')}")
    return found[0]


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (T, 3) (0-based) of a Wavefront OBJ; polygons are fanned."""
    vertices, faces = [], []
    for line in Path(path).read_text().splitlines():
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0] == "v":
            vertices.append([float(t) for t in tokens[1:4]])
        elif tokens[0] == "f":
            # "f 1 2 3", "f 1/1/1 ..." or "f -3 -2 -1" (negative: relative to the end so far).
            ids = [int(t.split("/")[0]) for t in tokens[1:]]
            ids = [i - 1 if i > 0 else len(vertices) + i for i in ids]
            faces += [[ids[0], ids[k], ids[k + 1]] for k in range(1, len(ids) - 1)]
    if not vertices or not faces:
        raise ValueError(f"{path}: no vertices or no faces")
    return np.asarray(vertices, np.float64), np.asarray(faces, np.int64)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(count, 3) points uniform over the mesh surface: triangles by area, then barycentric."""
    corners = vertices[faces]  # (T, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0],
                                          corners[:, 2] - corners[:, 0]), axis=-1)
    if not areas.sum() > 0:
        raise ValueError("mesh has no surface area")
    chosen = corners[rng.choice(len(faces), size=count, p=areas / areas.sum())]
    # sqrt makes the barycentric coordinates uniform over each triangle.
    s, t = np.sqrt(rng.random(count))[:, None], rng.random(count)[:, None]
    return (1 - s) * chosen[:, 0] + s * (1 - t) * chosen[:, 1] + s * t * chosen[:, 2]


def _object_points(sequence: TacoSequence, role: str, num_annotated: int, indices: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(N, 149, 3) surface points of the tool or target in metres, moved by its poses."""
    pose_path = _object_pose_file(sequence, role)
    poses = np.load(pose_path)
    if poses.shape != (num_annotated, 4, 4):
        raise TacoError(f"{sequence}: {pose_path.name} holds {poses.shape}, expected "
                        f"({num_annotated}, 4, 4) to match the hand poses")
    model_id = pose_path.stem.removeprefix(f"{role}_")
    mesh_path = _require(sequence.root / "Object_Models" / f"{model_id}_cm.obj", sequence,
                         f"{role} mesh")
    try:
        local = sample_surface(*read_obj(mesh_path), POINTS_PER_OBJECT, rng) * CM_TO_M
    except ValueError as e:
        raise TacoError(f"{sequence}: {role} mesh {mesh_path}: {e}") from e
    poses = poses[indices]
    return np.einsum("nij,pj->npi", poses[:, :3, :3], local) + poses[:, None, :3, 3]


def _read_camera(sequence: TacoSequence, serial: str | None
                 ) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """(video path, K (3, 3), R (3, 3), T (3,)) of one allocentric camera."""
    folder = sequence.folder("Allocentric_RGB_Videos")
    if serial is None:
        videos = sorted(folder.glob("*.mp4"))
        if not videos:
            raise TacoError(f"{sequence}: missing allocentric video: no *.mp4 in {folder}")
        serial = videos[0].stem
    video = _require(folder / f"{serial}.mp4", sequence, "allocentric video")
    calibration = _require(sequence.folder("Allocentric_Camera_Parameters") / "calibration.json",
                           sequence, "camera calibration")
    cameras = json.loads(calibration.read_text())
    if serial not in cameras:
        raise TacoError(f"{sequence}: {calibration} has no camera {serial} "
                        f"(it has {sorted(cameras)})")
    params = cameras[serial]
    K, R, T = (np.asarray(params[k], np.float64) for k in ("K", "R", "T"))
    return video, K.reshape(3, 3), R.reshape(3, 3), T.reshape(3)


# ---------------------------------------------------------------------------------------------
# Space: the crop around the hands and objects
# ---------------------------------------------------------------------------------------------


def crop_box(uv: np.ndarray, image_hw: tuple[int, int], aspect: float, margin: float
             ) -> tuple[int, int, int, int]:
    """Box around pixels `uv` (M, 2), with aspect width / height, kept on the image if it fits.

    The bounding box of `uv` grows by `margin` times its size on every side, then along one
    axis to reach `aspect`. A box that fits is shifted onto the image; a larger one covers the
    whole image, as near centred on the points as it can be, and is zero-padded when cropped.
    Returns integer (left, top, width, height): the crop holds pixel columns left .. left +
    width - 1 (pixel centres at integers).
    """
    lo, hi = uv.min(0), uv.max(0)
    centre, size = (lo + hi) / 2, (hi - lo) * (1 + 2 * margin) + 1
    height = max(int(np.ceil(max(size[1], size[0] / aspect))), 2)
    width = max(int(round(height * aspect)), 2)
    box = []
    for c, extent, limit in ((centre[0], width, image_hw[1]), (centre[1], height, image_hw[0])):
        start = int(round(c - (extent - 1) / 2))
        box.append(int(np.clip(start, min(0, limit - extent), max(0, limit - extent))))
    return box[0], box[1], width, height


def _crop_resize(frame: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int]
                 ) -> np.ndarray:
    """(h, w, 3) uint8 frame -> the box, zero-padded outside the frame, resized to out_hw."""
    left, top, width, height = box
    crop = np.zeros((height, width, 3), np.uint8)
    x0, x1 = max(left, 0), min(left + width, frame.shape[1])
    y0, y1 = max(top, 0), min(top + height, frame.shape[0])
    crop[y0 - top:y1 - top, x0 - left:x1 - left] = frame[y0:y1, x0:x1]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    # Bilinear with align_corners=False maps pixel centres as crop_resize_intrinsics assumes.
    x = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _video_hw(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.height, stream.width


def _read_frames(sequence: TacoSequence, path: Path, indices: np.ndarray,
                 box: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8: video frames `indices`, cropped to `box` and resized as they decode
    (a 4096 x 3000 video never sits in memory whole)."""
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(indices.tolist()):
        slots.setdefault(index, []).append(slot)
    out = np.zeros((len(indices), *out_hw, 3), np.uint8)
    last, count = max(slots), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), start=1):
            index = count - 1
            if index in slots:
                out[slots[index]] = _crop_resize(frame.to_ndarray(format="rgb24"), box, out_hw)
            if index == last:
                return out
    raise TacoError(f"{sequence}: video {path} has {count} frames, frame {last} is needed")


# ---------------------------------------------------------------------------------------------
# One sequence -> one clip
# ---------------------------------------------------------------------------------------------


def convert_sequence(sequence: TacoSequence, hands: dict[str, MANO], data: DataConfig, *,
                     seed: int = 0, split: str = "train", camera: str | None = None,
                     margin: float = 0.1) -> Clip:
    """Turn one TACO sequence into a clip of `data.num_frames` frames at `data.fps`.

    Args:
        sequence: from `list_sequences`.
        hands: {"left": MANO, "right": MANO} from `load_hand_models`.
        data: output height, width, frame count and rate.
        seed: seeds the object surface sampling (tool first, then target).
        split: recorded on the clip (see `read_split_file` for TACO's own split).
        camera: allocentric camera serial; None for the first video in sorted order.
        margin: crop margin around the projected hands and objects, as a fraction of their
            bounding box per side.
    Returns:
        A validated Clip: joints (N, 42, 3) and points (N, 298, 3) in metres in TACO's world
        frame, the cropped and resized video (N, H, W, 3), K adjusted to the crop, R, T as
        calibrated. motion_video is left None (rendered by the caller).
    """
    # 1. Hands: MANO parameters of both hands; their frame count is the sequence's.
    params = {side: _read_hand(sequence, side) for side in HANDS}
    num_annotated = len(params["left"][0])
    if len(params["right"][0]) != num_annotated:
        raise TacoError(f"{sequence}: left hand has {num_annotated} frames, right hand "
                        f"{len(params['right'][0])}")
    try:
        indices = resample_indices(num_annotated, data.num_frames, data.fps)
    except ValueError as e:
        raise TacoError(f"{sequence} is too short: {e}") from e
    joints = np.concatenate([_hand_joints(hands[side], params[side][0][indices],
                                          params[side][1][indices], params[side][2])
                             for side in HANDS], axis=1)

    # 2. Objects: mesh surface samples (cm -> m), moved by their poses.
    rng = np.random.default_rng(seed)
    points = np.concatenate([_object_points(sequence, role, num_annotated, indices, rng)
                             for role in ROLES], axis=1)

    # 3. Camera and crop: one box around everything the clip projects to.
    video, K, R, T = _read_camera(sequence, camera)
    image_hw = _video_hw(video)
    if not (0 <= K[0, 2] < image_hw[1] and 0 <= K[1, 2] < image_hw[0]):
        raise TacoError(f"{sequence}: principal point {K[:2, 2]} of camera {video.stem} lies "
                        f"outside its {image_hw[1]} x {image_hw[0]} video")
    uv, _ = project(torch.from_numpy(np.concatenate([joints, points], 1).reshape(-1, 3)),
                    torch.from_numpy(K), torch.from_numpy(R), torch.from_numpy(T))
    box = crop_box(uv.numpy(), image_hw, data.width / data.height, margin)

    # 4. Frames: decode, crop, resize; intrinsics follow the same crop and scale.
    frames = _read_frames(sequence, video, indices, box, (data.height, data.width))
    K_clip = crop_resize_intrinsics(K, box[0], box[1], data.width / box[2],
                                    data.height / box[3])

    action, tool, target = sequence.action_tool_target
    return Clip(
        clip_id=f"taco-{sequence.name}", prompt=sequence.prompt, action=action, tool=tool,
        target=target, split=split, source="taco", seed=seed, fps=data.fps,
        joints=joints.astype(np.float32), points=points.astype(np.float32), K=K_clip,
        R=R.astype(np.float32), T=T.astype(np.float32), video=frames,
    ).validate(data.num_frames, data.height, data.width)
