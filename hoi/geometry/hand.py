"""The 21-joint MANO hand skeleton and the 42-joint two-hand layout.

MANO joint order (the 16 joints of MANO's kinematic tree, then the five fingertips in the
order manopth appends them):

    0 wrist
    1-3 index (MCP, PIP, DIP)     4-6 middle     7-9 pinky     10-12 ring     13-15 thumb
    16 thumb tip   17 index tip   18 middle tip   19 ring tip   20 pinky tip

Two hands are stacked left first: joints 0-20 are the left hand, 21-41 the right hand.
"""

from __future__ import annotations

import numpy as np

from hoi.geometry.rotation import unit

JOINTS_PER_HAND = 21
NUM_JOINTS = 2 * JOINTS_PER_HAND

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

# Joints of each finger from the palm outwards (MCP/CMC, PIP, DIP, tip).
FINGER_JOINTS: dict[str, tuple[int, int, int, int]] = {
    "thumb": (13, 14, 15, 16),
    "index": (1, 2, 3, 17),
    "middle": (4, 5, 6, 18),
    "ring": (10, 11, 12, 19),
    "pinky": (7, 8, 9, 20),
}

# PARENTS[j] is the parent joint of j within one hand (-1 for the wrist).
PARENTS: tuple[int, ...] = tuple(
    {0: -1, **{c: p for chain in FINGER_JOINTS.values() for p, c in zip((0,) + chain[:-1], chain, strict=True)}}[j]
    for j in range(JOINTS_PER_HAND)
)

# Bones of one hand as (parent, child), and the finger each belongs to: 20 per hand.
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, JOINTS_PER_HAND))
BONE_FINGER: tuple[int, ...] = tuple(
    next(i for i, f in enumerate(FINGERS) if child in FINGER_JOINTS[f]) for _, child in BONES
)

# Hand shape: sphere radius (metres) of each joint of one hand, tapering from the wrist to the
# fingertips.
JOINT_RADII: tuple[float, ...] = tuple(
    0.016 if j == 0 else next((0.0110, 0.0095, 0.0085, 0.0075)[chain.index(j)]
                              for chain in FINGER_JOINTS.values() if j in chain)
    for j in range(JOINTS_PER_HAND))
"""Sphere radius in metres of each joint of one hand (MANO order)."""


def two_hand_bones() -> list[tuple[int, int, int, int]]:
    """All 40 bones of both hands as (parent, child, hand, finger); indices into the 42 joints."""
    return [(p + h * JOINTS_PER_HAND, c + h * JOINTS_PER_HAND, h, f)
            for h in range(2) for (p, c), f in zip(BONES, BONE_FINGER, strict=True)]


# ---------------------------------------------------------------------------------------------
# Hand: forward kinematics in the hand frame, grasp by curling fingers onto a handle
# ---------------------------------------------------------------------------------------------
# Hand frame (right hand): wrist at the origin, x from the wrist towards the knuckles, y towards
# the thumb side, z out of the back of the hand (palm faces -z). The left hand mirrors y.

_BASE = {  # knuckle (MCP; CMC for the thumb) positions of an average adult hand
    "thumb": (0.024, 0.022, -0.012), "index": (0.088, 0.022, 0.0), "middle": (0.092, 0.002, 0.0),
    "ring": (0.086, -0.017, 0.0), "pinky": (0.077, -0.034, 0.0),
}
_LENGTHS = {  # proximal, middle, distal segment lengths (thumb: metacarpal, proximal, distal)
    "thumb": (0.040, 0.032, 0.027), "index": (0.040, 0.025, 0.021),
    "middle": (0.045, 0.028, 0.023), "ring": (0.042, 0.027, 0.022),
    "pinky": (0.033, 0.020, 0.019),
}
_SPREAD = {"index": 0.08, "middle": 0.0, "ring": -0.08, "pinky": -0.16}  # radians about z
# relative flexion speed of the three joints while a finger closes
_CURL = {"thumb": (0.35, 0.55, 0.45),
         **dict.fromkeys(("index", "middle", "ring", "pinky"), (1.0, 1.15, 0.75))}
# the thumb runs forward along the handle's thumb side (a knife or hammer grip)
_THUMB_DIR = unit(np.array([0.8, 0.5, -0.2]))
_THUMB_BEND = unit(np.array([0.3, -0.45, -0.75]) - np.dot([0.3, -0.45, -0.75], _THUMB_DIR)
                    * _THUMB_DIR)
FINGER_RADIUS = 0.009


def _finger(name: str, angles, scale: float) -> np.ndarray:
    """The 4 joints (knuckle .. tip) of one finger (4, 3) in the hand frame.

    `angles` (3,) are the flexions of the three joints; a float scales the finger's pattern."""
    if name == "thumb":
        u, w = _THUMB_DIR, _THUMB_BEND
    else:
        spread = _SPREAD[name]
        u, w = np.array([np.cos(spread), np.sin(spread), 0.0]), np.array([0.0, 0.0, -1.0])
    if np.ndim(angles) == 0:
        angles = angles * np.asarray(_CURL[name])
    joints = [np.asarray(_BASE[name]) * scale]
    for length, theta in zip(_LENGTHS[name], np.cumsum(angles), strict=True):
        joints.append(joints[-1] + scale * length * (np.cos(theta) * u + np.sin(theta) * w))
    return np.stack(joints)


def hand_joints(angles: dict[str, np.ndarray | float], scale: float) -> np.ndarray:
    """Right-hand joints (21, 3) in MANO order from per-finger flexions (0 = flat hand)."""
    joints = np.zeros((JOINTS_PER_HAND, 3))
    for name in FINGERS:
        joints[list(FINGER_JOINTS[name])] = _finger(name, angles[name], scale)
    return joints


def _segment_distances(chain: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Distance of each segment of `chain` (4, 3) to the line through g along y: (3,)."""
    a, b = chain[:-1][:, [0, 2]], chain[1:][:, [0, 2]]
    ab, ag = b - a, g[[0, 2]] - a
    t = np.clip((ab * ag).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    return np.linalg.norm(a + t[:, None] * ab - g[[0, 2]], axis=-1)


def grasp_handle(scale: float, handle_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Right hand closed around a handle that runs along the hand frame's y axis.

    Returns the 21 joints (21, 3) in MANO order and the handle centre g (3,) in the hand
    frame, the handle resting against the palm below the knuckles. Fingers close as a
    grasp planner closes them: all joints flex together; once a segment touches the handle,
    the joints before it stop and the rest go on, until every segment touches or the joints
    reach their limit."""
    g = np.array([0.098 * scale, 0.0, -(0.016 * scale + handle_radius)])
    contact = handle_radius + FINGER_RADIUS * scale
    step, limit = 0.02, 1.75
    angles = {}
    for name in FINGERS:
        pattern = np.asarray(_CURL[name])
        # the thumb starts extended so that it closes onto thick handles rather than inside them
        theta, free = (-1.0 * pattern if name == "thumb" else np.zeros(3)), 0
        while free < 3:
            trial = theta.copy()
            trial[free:] = np.minimum(trial[free:] + step * pattern[free:], limit)
            hits = np.nonzero(_segment_distances(_finger(name, trial, scale), g)[free:] < contact)[0]
            if len(hits):
                free += int(hits[0]) + 1  # that segment touches: freeze the joints up to it
            elif np.array_equal(trial, theta):
                break  # every free joint at its limit
            else:
                theta = trial
        angles[name] = theta
    return hand_joints(angles, scale), g


def mirror(joints: np.ndarray) -> np.ndarray:
    """Right hand -> left hand in the hand frame (y negated)."""
    return joints * np.array([1.0, -1.0, 1.0])
