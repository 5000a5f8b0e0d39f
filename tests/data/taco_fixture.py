"""A small fake data set in TACO's layout (see hoi.data.taco for the layout), built by tests.

Nothing here is real data: the MANO-format models are random hands of 778 vertices around a
procedural skeleton; the objects are boxes; the video is drawn from the fixture's own ground
truth. The hands keep their fingers flat (zero finger pose) so their joints have a closed form
(a rigid motion of the shaped rest joints) that the tests compare the converter against,
independently of hoi.geometry.mano's skinning.

Drawn in the video: every hand joint but the wrist as a small square (left hand red, right
hand green), each wrist as a white Gaussian blob centred on its exact projection, so a test can
measure where a wrist lands in a cropped frame to a fraction of a pixel.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from hoi.geometry.camera import look_at
from hoi.render.mp4 import encode_mp4

TRIPLET = "(stir, spoon, bowl)"
SERIAL = "22139908"
IMAGE_HW = (120, 160)
BACKGROUND = 40
LEFT_COLOUR = (230, 40, 40)
RIGHT_COLOUR = (40, 220, 40)
WRIST_SIGMA = 1.5  # pixels
TOOL_ID, TARGET_ID = "017", "042"
TOOL_HALF_CM = np.array([8.0, 1.5, 1.0])  # half extents of the box meshes, centimetres
TARGET_HALF_CM = np.array([6.0, 6.0, 3.0])
TIP_VERTICES = {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)}


# ---------------------------------------------------------------------------------------------
# A random MANO-format model
# ---------------------------------------------------------------------------------------------


def _rest_skeleton() -> tuple[np.ndarray, np.ndarray]:
    """Right hand, metres, wrist at the origin, fingers along +x: 16 joints (MANO order) and
    the 5 fingertips (thumb, index, middle, ring, pinky)."""
    fingers = {  # MCP position and segment lengths (to PIP, DIP, tip), MANO finger order
        "index": ((0.085, 0.022), (0.035, 0.022, 0.020)),
        "middle": ((0.090, 0.000), (0.038, 0.025, 0.022)),
        "pinky": ((0.075, -0.038), (0.028, 0.018, 0.018)),
        "ring": ((0.085, -0.020), (0.035, 0.024, 0.020)),
        "thumb": ((0.025, 0.030), (0.035, 0.030, 0.025)),
    }
    joints, tips = [np.zeros(3)], {}
    for name, ((x, y), lengths) in fingers.items():
        direction = np.array([0.7, 0.7, 0.0]) if name == "thumb" else np.array([1.0, 0, 0])
        point = np.array([x, y, 0.0])
        joints.append(point)
        for length in lengths[:2]:
            point = point + length * direction
            joints.append(point)
        tips[name] = point + lengths[2] * direction
    order = ("thumb", "index", "middle", "ring", "pinky")
    return np.stack(joints), np.stack([tips[n] for n in order])


def make_mano_arrays(side: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random hand in the official MANO pickle's keys and shapes (778 vertices)."""
    joints, tips = _rest_skeleton()
    owner = np.arange(778) % 16  # the joint each vertex hangs on
    template = joints[owner] + rng.normal(0, 0.005, (778, 3))
    # Fingertip vertices (444 and 445 both sit on the middle tip: manopth reads 445 on the
    # left) lie at the tips and skin to their finger's last joint.
    tip_finger = {745: 0, 317: 1, 444: 2, 445: 2, 556: 3, 673: 4}  # thumb .. pinky
    last_joint = (15, 3, 6, 12, 9)
    for vertex, finger in tip_finger.items():
        template[vertex], owner[vertex] = tips[finger], last_joint[finger]
    regressor = np.zeros((16, 778))
    for j in range(16):
        members = [v for v in np.flatnonzero(owner == j) if v not in tip_finger]
        regressor[j, members] = 1.0 / len(members)
    shapedirs = rng.normal(0, 0.002, (778, 3, 10))
    posedirs = rng.normal(0, 0.001, (778, 3, 135))
    if side == "left":  # MANO's left hand mirrors the right one in x
        template[:, 0] *= -1
        shapedirs[:, 0] *= -1
        posedirs[:, 0] *= -1
    return {
        "v_template": template, "shapedirs": shapedirs, "posedirs": posedirs,
        "J_regressor": regressor, "weights": np.eye(16)[owner],
        "kintree_table": np.array([[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14],
                                   list(range(16))], np.int64),
        "hands_components": np.linalg.qr(rng.normal(size=(45, 45)))[0],
        "hands_mean": rng.normal(0, 0.2, 45),
        "f": rng.integers(0, 778, (32, 3)).astype(np.uint32),
    }


def _stand_in_modules() -> tuple[mock._patch_dict, type, type]:
    """Importable classes named chumpy.ch.Ch and scipy.sparse.csc.csc_matrix, so pickles can
    be written the way the official (chumpy, scipy) MANO files are, without those packages."""
    ch_module, csc_module = types.ModuleType("chumpy.ch"), types.ModuleType("scipy.sparse.csc")
    ch = type("Ch", (), {"__module__": "chumpy.ch"})
    csc = type("csc_matrix", (), {"__module__": "scipy.sparse.csc"})
    ch_module.Ch, csc_module.csc_matrix = ch, csc
    modules = {"chumpy": types.ModuleType("chumpy"), "chumpy.ch": ch_module,
               "scipy": types.ModuleType("scipy"), "scipy.sparse": types.ModuleType("scipy.sparse"),
               "scipy.sparse.csc": csc_module}
    return mock.patch.dict(sys.modules, modules), ch, csc


def write_mano_model(path: Path, arrays: dict[str, np.ndarray], official_style: bool) -> None:
    """Pickle `arrays`; official_style mimics MANO's files: protocol 2, shapedirs as a chumpy
    array, J_regressor as a scipy csc matrix."""
    if not official_style:
        path.write_bytes(pickle.dumps(arrays))
        return
    patch, ch_class, csc_class = _stand_in_modules()
    with patch:
        ch = ch_class()
        ch.__dict__.update(x=arrays["shapedirs"], _dirty_vars=set(), _itr=None,
                           _depends_on_deps={}, _make_dense=False, _make_sparse=False)
        dense = arrays["J_regressor"]
        rows, cols = np.nonzero(dense.T)  # column-major walk: csc order
        csc = csc_class()
        csc.__dict__.update(_shape=dense.shape, maxprint=50, data=dense.T[rows, cols],
                            indices=cols.astype(np.int32),
                            indptr=np.searchsorted(rows, np.arange(dense.shape[1] + 1)).astype(
                                np.int32))
        path.write_bytes(pickle.dumps({**arrays, "shapedirs": ch, "J_regressor": csc},
                                      protocol=2))


def write_mano_models(mano_root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """MANO_LEFT.pkl (official style) and MANO_RIGHT.pkl (plain numpy) under mano_root."""
    mano_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    models = {side: make_mano_arrays(side, rng) for side in ("left", "right")}
    write_mano_model(mano_root / "MANO_LEFT.pkl", models["left"], official_style=True)
    write_mano_model(mano_root / "MANO_RIGHT.pkl", models["right"], official_style=False)
    return models


# ---------------------------------------------------------------------------------------------
# A sequence
# ---------------------------------------------------------------------------------------------


def rotation(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3), numpy (independent of the code under test)."""
    angle = np.linalg.norm(axis_angle, axis=-1)[..., None, None]
    k = axis_angle / np.maximum(angle[..., 0], 1e-12)
    zero = np.zeros_like(k[..., 0])
    skew = np.stack([zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0],
                     -k[..., 1], k[..., 0], zero], -1).reshape(*k.shape[:-1], 3, 3)
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def flat_hand_joints(arrays: dict[str, np.ndarray], side: str, betas: np.ndarray,
                     global_orient: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """(F, 21, 3) TACO-convention joints of a flat hand: the shaped rest joints and tips, turned
    about the wrist, with the wrist put at `trans`."""
    shaped = arrays["v_template"] + arrays["shapedirs"] @ betas
    rest = np.concatenate([arrays["J_regressor"] @ shaped, shaped[list(TIP_VERTICES[side])]])
    return (rest - rest[0]) @ rotation(global_orient).swapaxes(-1, -2) + trans[:, None]


def box_mesh(half: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Corners (8, 3) and the 6 quads (1-based, outward) of an axis-aligned box."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * half
    quads = [[1, 2, 4, 3], [5, 7, 8, 6], [1, 5, 6, 2], [3, 4, 8, 7], [1, 3, 7, 5], [2, 6, 8, 4]]
    return corners, quads


def _write_obj(path: Path, half: np.ndarray, triangles: bool) -> None:
    """Box OBJ in cm; triangles as 'f a/a/a ...' or quads as 'f a b c d' (both exist)."""
    corners, quads = box_mesh(half)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in corners]
    for q in quads:
        faces = [[q[0], q[1], q[2]], [q[0], q[2], q[3]]] if triangles else [q]
        lines += ["f " + " ".join(f"{i}/{i}/{i}" if triangles else str(i) for i in f)
                  for f in faces]
    path.write_text("\n".join(lines) + "\n")


def _pose(axis_angle: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (len(translation), 1, 1))
    out[:, :3, :3], out[:, :3, 3] = rotation(axis_angle), translation
    return out


def _project(points: np.ndarray, K: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    cam = points @ R.T + T
    return (cam @ K.T)[..., :2] / cam[..., 2:]


def _draw(uv_hands: np.ndarray) -> np.ndarray:
    """One frame: squares on the non-wrist joints, white Gaussian blobs on the wrists."""
    h, w = IMAGE_HW
    frame = np.full((h, w, 3), BACKGROUND, np.float64)
    for hand, colour in enumerate((LEFT_COLOUR, RIGHT_COLOUR)):
        for u, v in np.rint(uv_hands[hand, 1:]).astype(int):
            frame[max(v - 2, 0):v + 3, max(u - 2, 0):u + 3] = colour
    rows, cols = np.mgrid[:h, :w]
    for u, v in uv_hands[:, 0]:
        blob = np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * WRIST_SIGMA ** 2))
        frame = np.maximum(frame, (BACKGROUND + (255 - BACKGROUND) * blob)[..., None])
    return frame.round().astype(np.uint8)


@dataclass
class FakeSequence:
    """What the fixture wrote, and the ground truth the converter must reproduce."""

    root: Path
    triplet: str
    name: str
    joints: np.ndarray  # (F, 42, 3) world joints, metres, left hand first
    tool_poses: np.ndarray  # (F, 4, 4)
    target_poses: np.ndarray  # (F, 4, 4)
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray


def write_sequence(root: Path, models: dict[str, dict[str, np.ndarray]], name: str,
                   num_frames: int = 200, seed: int = 0) -> FakeSequence:
    """Write one sequence of `num_frames` 30 Hz frames in TACO's layout under `root`."""
    rng = np.random.default_rng(seed)
    folders = {kind: root / kind / TRIPLET / name for kind in
               ("Hand_Poses", "Object_Poses", "Allocentric_RGB_Videos",
                "Allocentric_Camera_Parameters")}
    for folder in [*folders.values(), root / "Object_Models"]:
        folder.mkdir(parents=True, exist_ok=True)
    phase = 2 * np.pi * np.arange(num_frames) / 100

    # 1. Hands: flat fingers, a wobbling wrist, left at -x and right at +x.
    joints = []
    for side, x in (("left", -0.06), ("right", 0.06)):
        betas = rng.normal(0, 1, 10)
        orient = np.stack([0.2 * np.sin(phase / 2), 0 * phase, 0.3 * np.sin(phase)], -1)
        trans = np.stack([x + 0.02 * np.sin(phase), 0.01 * np.cos(phase),
                          np.full_like(phase, 0.12)], -1)
        pose = np.concatenate([orient, np.zeros((num_frames, 45))], -1)
        frames = {str(i): {"hand_pose": torch.tensor(pose[i], dtype=torch.float32),
                           "hand_trans": torch.tensor(trans[i], dtype=torch.float32)}
                  for i in range(num_frames)}  # unpadded keys: only a natural sort orders them
        (folders["Hand_Poses"] / f"{side}_hand.pkl").write_bytes(pickle.dumps(frames))
        shape = {"hand_shape": torch.tensor(betas, dtype=torch.float32)[None]}
        (folders["Hand_Poses"] / f"{side}_hand_shape.pkl").write_bytes(pickle.dumps(shape))
        joints.append(flat_hand_joints(models[side], side, betas.astype(np.float32), orient,
                                       trans))
    joints = np.concatenate(joints, 1)

    # 2. Objects: a spoon-sized box circling between the hands, a bowl-sized box at rest.
    tool_poses = _pose(np.stack([0 * phase, 0 * phase, 0.5 * phase], -1),
                       np.stack([0.02 * np.sin(phase), 0.05 + 0 * phase, 0.15 + 0 * phase], -1))
    target_poses = _pose(np.tile([0.0, 0.0, 0.3], (num_frames, 1)),
                         np.tile([0.0, 0.10, 0.03], (num_frames, 1)))
    np.save(folders["Object_Poses"] / f"tool_{TOOL_ID}.npy", tool_poses)
    np.save(folders["Object_Poses"] / f"target_{TARGET_ID}.npy", target_poses)
    _write_obj(root / "Object_Models" / f"{TOOL_ID}_cm.obj", TOOL_HALF_CM, triangles=True)
    _write_obj(root / "Object_Models" / f"{TARGET_ID}_cm.obj", TARGET_HALF_CM, triangles=False)

    # 3. Camera (and a second one without a video) and the video of the hands.
    R, T = look_at(np.array([0.0, -0.5, 0.55]), np.array([0.0, 0.03, 0.08]))
    K = np.array([[140.0, 0, 79.5], [0, 140.0, 59.5], [0, 0, 1]])
    calibration = {SERIAL: {"K": K.ravel().tolist(), "R": R.ravel().tolist(), "T": T.tolist()},
                   "22070938": {"K": K.tolist(), "R": np.eye(3).tolist(), "T": [0, 0, 1.0]}}
    (folders["Allocentric_Camera_Parameters"] / "calibration.json").write_text(
        json.dumps(calibration))
    uv = _project(joints, K, R, T).reshape(num_frames, 2, 21, 2)
    video = np.stack([_draw(frame_uv) for frame_uv in uv])
    (folders["Allocentric_RGB_Videos"] / f"{SERIAL}.mp4").write_bytes(
        encode_mp4(video, 30.0, profile="web"))
    return FakeSequence(root, TRIPLET, name, joints, tool_poses, target_poses, K, R, T)
