"""Layout of a 3D motion frame: 42 hand joints and 298 object points (SPEC section 1).

Points 0-148 are the tool, 149-297 the target object. Arrays are (..., N, 42, 3) for joints
and (..., N, 298, 3) for points, in metres, in the world frame of the clip's camera.
"""

from __future__ import annotations

from hoi.geometry.hand import NUM_JOINTS

POINTS_PER_OBJECT = 149
NUM_POINTS = 2 * POINTS_PER_OBJECT
OBJECTS = ("tool", "target")

__all__ = ["NUM_JOINTS", "NUM_POINTS", "OBJECTS", "POINTS_PER_OBJECT"]
