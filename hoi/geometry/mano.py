"""The MANO hand model in plain torch: load the official pickles, pose them, read off 21 joints.

MANO (Romero et al. 2017) is a linear-blend-skinned mesh of 778 vertices driven by 16 joints.
`MANO.forward` takes axis-angle rotations (global orient + 15 finger joints, or PCA
coefficients of the finger rotations), 10 shape coefficients and a translation, and returns
the posed vertices and the 21 joints of hoi.geometry.hand: the 16 joints of MANO's kinematic
tree, then the five fingertips (thumb, index, middle, ring, pinky) read off mesh vertices.

Conventions followed (from manopth's ``manolayer.py``, vendored in leolyliu/TACO-Instructions
at ``dataset_utils/manopth/manopth/manolayer.py``: the layer TACO's own loader,
``dataset_utils/hand_pose_loader.py``, poses its annotations with):
- pose blend shapes are driven by ``(R_j - I)`` of joints 1-15, flattened row-major (135);
- the root rotates about the regressed wrist joint; the translation is added last;
- fingertip vertices are 745, 317, 444, 556, 673 for the right hand; manopth takes vertex 445
  instead of 444 for the left middle fingertip, and so do we, so TACO's joints are reproduced;
- ``flat_hand_mean``: True makes zero finger pose the flat hand (manopth's default, used by
  TACO); False adds the model's ``hands_mean`` (smplx's default);
- the model arrays are used as stored: some codebases flip the x rows of MANO_LEFT's
  ``shapedirs`` to fix a known sign error; manopth does not, so neither do we: TACO's loader
  uses the unfixed model.
Units are those of the model file: metres for the official MANO files (manopth multiplies by
1000 on output; we do not). Unlike manopth we do not reorder the joints: the order is MANO's
tree order plus tips, as hoi.geometry.hand documents.

Loading: the official ``MANO_LEFT.pkl`` / ``MANO_RIGHT.pkl`` are Python 2 pickles holding
chumpy arrays (``shapedirs``) and a scipy sparse ``J_regressor``. `load_pickle` reads them
without chumpy or scipy: a restricted unpickler turns plain chumpy arrays and scipy sparse
matrices into numpy arrays, rebuilds numpy arrays and torch tensors, and refuses every other
class, so a model or parameter file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

Side = Literal["left", "right"]

NUM_VERTICES = 778
NUM_TREE_JOINTS = 16
NUM_POSE_PARAMS = 3 * (NUM_TREE_JOINTS - 1)  # 45 finger rotations, axis-angle

# Fingertip vertices in the order they are appended (thumb, index, middle, ring, pinky).
FINGERTIP_VERTICES: dict[str, tuple[int, ...]] = {
    "right": (745, 317, 444, 556, 673),
    "left": (745, 317, 445, 556, 673),
}

# Keys of the model file `MANO` needs, with their shapes (None: any number of shape
# coefficients).
_REQUIRED: dict[str, tuple[int | None, ...]] = {
    "v_template": (NUM_VERTICES, 3), "shapedirs": (NUM_VERTICES, 3, None),
    "posedirs": (NUM_VERTICES, 3, 9 * (NUM_TREE_JOINTS - 1)),
    "J_regressor": (NUM_TREE_JOINTS, NUM_VERTICES), "weights": (NUM_VERTICES, NUM_TREE_JOINTS),
    "kintree_table": (2, NUM_TREE_JOINTS), "hands_components": (NUM_POSE_PARAMS, NUM_POSE_PARAMS),
    "hands_mean": (NUM_POSE_PARAMS,),
}


class ManoLoadError(ValueError):
    """A MANO model or parameter file that cannot be read safely or has the wrong layout."""


# ---------------------------------------------------------------------------------------------
# Reading pickles without chumpy or scipy
# ---------------------------------------------------------------------------------------------


class _PickledState:
    """Stand-in for a chumpy or scipy.sparse object: keeps the state it was pickled with."""

    origin = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _load_tensor_bytes(data: bytes) -> torch.Tensor:
    """torch's own `_load_from_bytes`, but weights-only and onto the CPU (files saved on GPUs)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# Globals a parameter or model file may name. Python 2 names (copy_reg, __builtin__) are mapped
# to Python 3 ones by pickle itself, after this check.
_ALLOWED = {
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("__builtin__", "set"), ("builtins", "set"), ("__builtin__", "object"),
    ("builtins", "object"), ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy" or module.startswith("scipy.sparse"):
            return type(name, (_PickledState,), {"origin": f"{module}.{name}"})
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_tensor_bytes
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a numpy/torch array "
                                     "or a chumpy/scipy.sparse matrix")


def load_pickle(path: str | Path) -> Any:
    """Load a MANO model or MANO parameter pickle without running code from it.

    Python 2 pickles (the official MANO files) are read with latin-1 strings. Numpy arrays and
    torch tensors load as themselves (tensors onto the CPU); chumpy arrays and scipy sparse
    matrices load as stand-ins that `to_numpy` turns into numpy arrays.
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError) as e:
        raise ManoLoadError(f"{path}: {e}") from e


def _sparse_to_dense(obj: _PickledState) -> np.ndarray:
    """A pickled scipy csc/csr matrix (MANO's J_regressor is csc) as a dense array."""
    state = obj.state
    kind = obj.origin.rsplit(".", 1)[-1][:3]  # csc_matrix, csr_array, ...
    if kind not in ("csc", "csr"):
        raise ManoLoadError(f"unsupported sparse matrix {obj.origin}")
    indptr, indices = np.asarray(state["indptr"]), np.asarray(state["indices"])
    major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    rows, cols = (indices, major) if kind == "csc" else (major, indices)
    dense = np.zeros(tuple(state.get("_shape", state.get("shape", ()))), np.float64)
    np.add.at(dense, (rows, cols), np.asarray(state["data"]))  # add: entries may repeat
    return dense


def to_numpy(value: Any, name: str = "value") -> np.ndarray:
    """A loaded array-like (numpy, torch, chumpy or scipy.sparse stand-in) as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, _PickledState):
        if value.origin.startswith("scipy.sparse"):
            return _sparse_to_dense(value)
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:  # a chumpy expression, not a plain chumpy array
            raise ManoLoadError(f"{name} is a chumpy expression ({value.origin}); load the file "
                                "with chumpy installed and re-save it with numpy arrays")
        return to_numpy(state["x"], name)
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------
# Rotations and the kinematic chain
# ---------------------------------------------------------------------------------------------


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: (..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    # The epsilon keeps the angle's gradient finite at zero rotation.
    angle = torch.sqrt((axis_angle * axis_angle).sum(-1, keepdim=True) + 1e-16)
    x, y, z = (axis_angle / angle).unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).unflatten(-1, (3, 3))
    sin, cos = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin * skew + (1 - cos) * (skew @ skew)


def _rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3), (..., 3) -> (..., 4, 4) homogeneous transforms."""
    top = torch.cat([rotation, translation[..., None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


def forward_kinematics(rotations: torch.Tensor, rest_joints: torch.Tensor,
                       parents: tuple[int, ...]) -> torch.Tensor:
    """World transforms of a joint tree posed by local rotations.

    Args:
        rotations: (B, J, 3, 3) rotation of each joint relative to its parent.
        rest_joints: (B, J, 3) joint positions of the unposed mesh.
        parents: parent of each joint, -1 for the root; parents come before children.
    Returns:
        (B, J, 4, 4) transforms; their translations are the posed joint positions.
    """
    offsets = rest_joints.clone()
    child = [j for j in range(len(parents)) if parents[j] >= 0]
    offsets[:, child] -= rest_joints[:, [parents[j] for j in child]]
    local = _rigid(rotations, offsets)
    world = [local[:, 0]]
    for j in range(1, len(parents)):
        world.append(world[parents[j]] @ local[:, j])
    return torch.stack(world, 1)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class ManoOutput(NamedTuple):
    vertices: torch.Tensor
    """(B, 778, 3) posed mesh vertices."""
    joints: torch.Tensor
    """(B, 21, 3) joints in hoi.geometry.hand order (16 tree joints, then 5 fingertips)."""


def _parents_from_kintree(kintree_table: np.ndarray) -> tuple[int, ...]:
    """Parent of each joint from MANO's (2, 16) kintree_table (row 0 parents, row 1 ids)."""
    parent_of = dict(zip(kintree_table[1].tolist(), kintree_table[0].tolist(), strict=True))
    parents = tuple(int(p) if 0 <= p < NUM_TREE_JOINTS else -1
                    for p in (parent_of[j] for j in range(NUM_TREE_JOINTS)))
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, NUM_TREE_JOINTS)):
        raise ManoLoadError(f"kintree_table is not a tree rooted at joint 0 with parents before "
                            f"children: parents {parents}")
    return parents


class MANO(nn.Module):
    """One hand of MANO; its arrays are buffers, so `.to(device)` moves the whole model.

    Build it with `MANO.from_file(path, side=..., flat_hand_mean=...)` or from a dict of
    arrays with the keys of the official files (see `_REQUIRED`).
    """

    def __init__(self, arrays: dict[str, Any], side: Side, flat_hand_mean: bool) -> None:
        super().__init__()
        if side not in FINGERTIP_VERTICES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        self.side = side
        self.flat_hand_mean = flat_hand_mean
        values = {key: self._checked(arrays, key) for key in _REQUIRED}
        self.parents = _parents_from_kintree(values.pop("kintree_table"))
        for key, value in values.items():
            self.register_buffer(key, torch.as_tensor(value, dtype=torch.float32))
        self.fingertips = FINGERTIP_VERTICES[side]

    @staticmethod
    def _checked(arrays: dict[str, Any], key: str) -> np.ndarray:
        if key not in arrays:
            raise ManoLoadError(f"MANO model has no {key!r} (keys: {sorted(arrays)})")
        value = to_numpy(arrays[key], key)
        expected = _REQUIRED[key]
        if value.ndim != len(expected) or any(e not in (None, v)
                                              for e, v in zip(expected, value.shape, strict=True)):
            want = tuple("S" if e is None else e for e in expected)
            raise ManoLoadError(f"MANO {key} has shape {value.shape}, expected {want}")
        return value

    @classmethod
    def from_file(cls, path: str | Path, side: Side, flat_hand_mean: bool) -> MANO:
        """Load MANO_LEFT.pkl / MANO_RIGHT.pkl (official chumpy pickle or plain numpy arrays)."""
        arrays = load_pickle(path)
        if not isinstance(arrays, dict):
            raise ManoLoadError(f"{path}: expected a dict of arrays, got {type(arrays).__name__}")
        try:
            return cls(arrays, side, flat_hand_mean)
        except ManoLoadError as e:
            raise ManoLoadError(f"{path}: {e}") from e

    def forward(self, global_orient: torch.Tensor, hand_pose: torch.Tensor,
                betas: torch.Tensor | None = None, transl: torch.Tensor | None = None,
                pca: bool = False) -> ManoOutput:
        """Pose the hand by linear blend skinning.

        Args:
            global_orient: (B, 3) axis-angle rotation of the wrist.
            hand_pose: (B, 45) axis-angle of the 15 finger joints in MANO order, or with
                `pca=True` (B, k) coefficients of the first k `hands_components`.
            betas: (B, S') shape coefficients, S' <= the model's; None for the mean shape.
            transl: (B, 3) translation added to every vertex and joint; None for none.
        Returns:
            ManoOutput with vertices (B, 778, 3) and joints (B, 21, 3), in the model's units.
        """
        batch, dtype = global_orient.shape[0], self.v_template.dtype
        global_orient, hand_pose = global_orient.to(dtype), hand_pose.to(dtype)

        # 1. Finger rotations in axis-angle, relative to the flat or the mean hand.
        if pca:
            hand_pose = hand_pose @ self.hands_components[:hand_pose.shape[-1]]
        if not self.flat_hand_mean:
            hand_pose = hand_pose + self.hands_mean
        rotations = axis_angle_to_matrix(
            torch.cat([global_orient, hand_pose], -1).view(batch, NUM_TREE_JOINTS, 3))

        # 2. Shape: template plus shape blend shapes; joints regressed from the shaped mesh.
        shaped = self.v_template.expand(batch, -1, -1)
        if betas is not None:
            betas = betas.to(dtype)
            shaped = shaped + torch.einsum("vck,bk->bvc",
                                           self.shapedirs[..., :betas.shape[-1]], betas)
        rest_joints = self.J_regressor @ shaped

        # 3. Pose blend shapes, driven by how far each finger rotation is from identity.
        eye = torch.eye(3, dtype=dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        posed = shaped + torch.einsum("vcp,bp->bvc", self.posedirs, pose_feature)

        # 4. Skinning: each joint's transform, relative to its rest position, blended per vertex.
        world = forward_kinematics(rotations, rest_joints, self.parents)
        relative = world.clone()
        relative[..., :3, 3] -= (world[..., :3, :3] @ rest_joints[..., None])[..., 0]
        blended = torch.einsum("vj,bjmn->bvmn", self.weights, relative)
        vertices = (blended[..., :3, :3] @ posed[..., None])[..., 0] + blended[..., :3, 3]

        # 5. The 16 tree joints, then the fingertip vertices; translate everything.
        joints = torch.cat([world[:, :, :3, 3], vertices[:, list(self.fingertips)]], 1)
        if transl is not None:
            offset = transl.to(dtype)[:, None]
            vertices, joints = vertices + offset, joints + offset
        return ManoOutput(vertices, joints)
