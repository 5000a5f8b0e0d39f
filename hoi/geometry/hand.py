"""The 21-joint MANO hand skeleton and the 42-joint two-hand layout.

MANO joint order (the 16 joints of MANO's kinematic tree, then the five fingertips in the
order manopth appends them):

    0 wrist
    1-3 index (MCP, PIP, DIP)     4-6 middle     7-9 pinky     10-12 ring     13-15 thumb
    16 thumb tip   17 index tip   18 middle tip   19 ring tip   20 pinky tip

Two hands are stacked left first: joints 0-20 are the left hand, 21-41 the right hand.
"""

from __future__ import annotations

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


def two_hand_bones() -> list[tuple[int, int, int, int]]:
    """All 40 bones of both hands as (parent, child, hand, finger); indices into the 42 joints."""
    return [(p + h * JOINTS_PER_HAND, c + h * JOINTS_PER_HAND, h, f)
            for h in range(2) for (p, c), f in zip(BONES, BONE_FINGER, strict=True)]
