"""Procedural, seeded bimanual hand-object interaction clips (SPEC section 7).

A clip: the right hand holds a tool in a fist and performs an action on a target object that
the left hand steadies by its rim or edge. Hands are built by forward kinematics from fixed
bone lengths (scaled per clip) with fingers curled until they close around what they hold;
objects are rigid point clouds from per-category primitives; the tool follows an action-specific
trajectory expressed in the target's frame. World frame: table plane z = 0, z up, the camera
looks down at the table from the -y side. Units are metres.

The first frame shows the tool (shape and colour per category) in the hand above the target,
and the prompt names action, target and tool, so all three are recoverable by a model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from hoi.config import DataConfig
from hoi.data.clip import Clip
from hoi.data.shapes import (
    TARGET_COLOURS,
    TOOL_COLOURS,
    Target,
    Tool,
    make_target,
    make_tool,
    sample_parts,
)
from hoi.geometry.camera import intrinsics, look_at
from hoi.geometry.hand import FINGER_RADIUS, FINGERS, grasp_handle, hand_joints, mirror
from hoi.geometry.motion import POINTS_PER_OBJECT
from hoi.geometry.rotation import axis_angle, frame
from hoi.vocabulary import ACTIONS, HELDOUT_SPLIT, check_holdout, prompt_for


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _left_hand(target: Target, scale: float) -> np.ndarray:
    """The left hand steadying the target, in the target frame (21, 3).

    Tall targets are held by the rim on their -x side, fingers curled over it; flat ones
    (plate, board) are pressed down by a relaxed hand resting on their top near that edge."""
    if target.height >= 0.03:
        joints, g = grasp_handle(scale, target.rim_radius)
        joints, g = mirror(joints), mirror(g)
        # grip frame on the -x edge: fingers point inwards and down, the rim along its y axis
        R_rim = frame(np.array([0.0, 1.0, 0.0]), [0.6, 0.0, 1.0])
        rim = np.array([-target.half_width, 0.0, target.height])
        return (joints - g) @ R_rim.T + rim
    # relaxed hand along the -x edge, fingers pointing away from the person (+y)
    joints = mirror(hand_joints(dict.fromkeys(FINGERS, 0.3), scale)) @ np.array(
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T
    joints += np.array([-target.half_width + 0.025, -0.09 * scale, 0.0])
    joints[:, 2] += target.height + FINGER_RADIUS - joints[:, 2].min()
    return joints


# ---------------------------------------------------------------------------------------------
# Action trajectories: the tool's pose over normalised time s in [0, 1], in the target's frame
# ---------------------------------------------------------------------------------------------


def _tool_at(head: np.ndarray, R: np.ndarray, tool: Tool) -> tuple[np.ndarray, np.ndarray]:
    """Tool rotation and grip position that put its working point at `head` (N, 3)."""
    return R, head - R @ np.asarray(tool.work_point)


def tool_trajectory(action: str, s: np.ndarray, tool: Tool, target: Target,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(R (N, 3, 3), grip position (N, 3)) of the tool in the target frame."""
    h, b, w = target.height, target.inner_bottom, target.half_width
    phase = rng.uniform(0, 2 * np.pi)
    one = np.ones_like(s)
    if action == "stir":
        f, r = rng.uniform(1.2, 2.2), rng.uniform(0.25, 0.4) * w
        a = 2 * np.pi * f * s + phase
        head = np.stack([r * np.cos(a), r * np.sin(a), (b + 0.035) * one], -1)
        R = frame(np.stack([-0.35 + 0.1 * np.cos(a), 0.2 * one, -one], -1), [0.6, -1.0, 0.2])
        return _tool_at(head, R, tool)
    if action == "pour":
        tilt = np.deg2rad(rng.uniform(50, 75)) * _smoothstep((s - 0.15) / 0.35) * (
            1 - 0.4 * _smoothstep((s - 0.75) / 0.2))
        R0 = frame(np.array([0.0, 0.0, 1.0]), [1.0, 0.0, 0.0])  # upright, spout towards -x
        R = axis_angle(np.broadcast_to(R0[:, 0], s.shape + (3,)), -tilt) @ R0
        # the spout just above the rim, as low as the kettle's base allows (0.125 below the spout)
        spout_z = max(h + 0.06, 0.135) + 0.02 * np.sin(np.pi * s)
        head = np.stack([(0.35 * w + 0.02) * one, 0 * s, spout_z], -1)
        return _tool_at(head, R, tool)
    if action == "cut":
        f = rng.uniform(2.0, 3.5)
        lift = 0.035 * (0.5 - 0.5 * np.cos(2 * np.pi * f * s))
        head = np.stack([0.2 * w * (0.5 - s), 0 * s, h + 0.002 + lift], -1)
        R = frame(np.broadcast_to([-0.25, 1.0, -0.12], head.shape), [0.2, -0.3, 1.0])
        return _tool_at(head, R, tool)
    if action == "brush":
        f = rng.uniform(1.5, 2.5)
        a = 2 * np.pi * f * s + phase
        head = np.stack([0.55 * w * np.sin(a), 0.02 * np.sin(2 * a), h + 0.003 + 0 * s], -1)
        R = frame(np.broadcast_to([-0.45, 0.6, -0.55], head.shape), [0.3, -0.4, 1.0])
        return _tool_at(head, R, tool)
    if action == "scoop":
        f = rng.uniform(1.0, 1.6)
        a = 2 * np.pi * f * s + phase
        head = np.stack([0.4 * w * np.cos(a), 0 * s, b + 0.03 + 0.05 * (1 + np.sin(a))], -1)
        R = frame(np.stack([-0.3 + 0.3 * np.sin(a), 0.25 * one, -one], -1), [0.6, -1.0, 0.3])
        return _tool_at(head, R, tool)
    if action == "hit":
        f, swing = rng.uniform(2.0, 3.0), np.deg2rad(rng.uniform(35, 55))
        R0 = frame(np.array([-0.8, 0.45, -0.05]), [0.0, 0.0, 1.0])
        _, grip = _tool_at(np.array([0.0, 0.0, h + 0.002]), R0, tool)
        beta = swing * np.abs(np.sin(np.pi * f * s))
        R = axis_angle(np.broadcast_to(R0[:, 0], s.shape + (3,)), beta) @ R0
        return R, np.broadcast_to(grip, s.shape + (3,)).copy()
    if action == "spread":
        f = rng.uniform(0.6, 1.2)
        a = 2 * np.pi * f * s + phase
        head = np.stack([0.6 * w * np.sin(a), 0.12 * w * np.sin(2 * a), h + 0.003 + 0 * s], -1)
        R = frame(np.broadcast_to([-0.5, 0.7, -0.12], head.shape), [0.2, -0.3, 1.0])
        return _tool_at(head, R, tool)
    raise KeyError(f"unknown action {action!r}")


def _lead_in(grip: np.ndarray, s: np.ndarray, duration: float = 0.2) -> np.ndarray:
    """The clip opens with the tool raised beside the target, moving into the action."""
    away = np.array([0.04, -0.04, 0.07]) * (1 - _smoothstep(s / duration))[:, None]
    return grip + away


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------


@dataclass
class Look:
    """What the RGB renderer needs beyond the motion (hoi.render.rgb.render_rgb's inputs).

    surfels/normals (N, S, 3): dense object surface points per frame, the first
    `num_tool_surfels` on the tool, the rest on the target; surfel_rgb (S, 3) in [0, 1];
    skin_rgb (3,); table_rgb (2, 3); wall_rgb (3,); table_pattern: 0 checker, 1 stripes,
    2 wood-like."""

    surfels: np.ndarray
    normals: np.ndarray
    surfel_rgb: np.ndarray
    skin_rgb: np.ndarray
    table_rgb: np.ndarray
    wall_rgb: np.ndarray
    table_pattern: int
    num_tool_surfels: int


def split_clip(base_seed: int, split: str, index: int, data: DataConfig,
               holdout: str | None = None) -> tuple[Clip, Look]:
    """Clip `index` of a split. With a held-out "<action>:<target>", the heldout split pins it
    and the other splits redraw from derived seeds until they avoid it (the clip keeps its
    first seed when it already does, so the rest of the split is the same as without)."""
    clip_id = f"{split}-{index:06d}"
    if holdout is None:
        return generate_clip(clip_seed(base_seed, split, index), data, split, clip_id)
    action, target = check_holdout(holdout)
    if split == HELDOUT_SPLIT:
        return generate_clip(clip_seed(base_seed, split, index), data, split, clip_id,
                             action=action, target=target)
    for attempt in range(1000):
        key = index if attempt == 0 else f"{index}.{attempt}"
        clip, look = generate_clip(clip_seed(base_seed, split, key), data, split, clip_id)
        if (clip.action, clip.target) != (action, target):
            return clip, look
    raise RuntimeError(f"no clip avoids {holdout!r} in 1000 seeds")  # p < 1e-30


def clip_seed(base_seed: int, split: str, index: int | str) -> int:
    """A clip's seed from the run's seed, its split and its index or name (independent streams
    per split)."""
    digest = hashlib.sha256(f"{base_seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _jitter(colour, rng, amount=0.06) -> np.ndarray:
    return np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0, 1)


def _rigid(points: np.ndarray, R: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Object-frame points (P, 3) under per-frame poses R (N, 3, 3), p (N, 3) -> (N, P, 3)."""
    return np.einsum("nij,pj->npi", R, points) + p[:, None, :]


MIN_DEPTH = 0.25
"""Closest a hand or object may come to the camera, in metres."""


def frame_camera(points: np.ndarray, azimuth: float, elevation: float, K: np.ndarray,
                 fill: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, T) of a camera at the given azimuth and elevation (radians) around `points` (P, 3),
    aimed at their bounding-box centre, as close as lets them span `fill` of the image."""
    centre = (points.min(0) + points.max(0)) / 2
    direction = np.array([np.cos(elevation) * np.cos(azimuth),
                          np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    half = K[:2, 2] + 0.5  # half the image size in pixels (principal point at the centre)
    dist = 0.6
    for _ in range(4):  # the extent shrinks about as 1 / distance: a few steps converge
        R, T = look_at(centre + dist * direction, centre)
        cam = points @ R.T + T
        uv = (cam @ K.T)[:, :2] / cam[:, 2:]
        extent = np.abs(uv - K[:2, 2]).max(0) / half
        # ... but never closer than MIN_DEPTH to any point (no wide-angle close-ups)
        dist = max(dist * extent.max() / fill, dist + MIN_DEPTH - cam[:, 2].min())
    return look_at(centre + dist * direction, centre)


def generate_clip(seed: int, data: DataConfig, split: str = "train", clip_id: str | None = None,
                  action: str | None = None, tool: str | None = None, target: str | None = None
                  ) -> tuple[Clip, Look]:
    """One synthetic clip (without rendered frames) and its appearance, fully determined by seed.

    `action`, `tool` and `target` pin the choice that the seed would otherwise make."""
    rng = np.random.default_rng(seed)
    action = action or str(rng.choice(sorted(ACTIONS)))
    tools, targets = ACTIONS[action]
    tool = tool or str(rng.choice(tools))
    target = target or str(rng.choice(targets))
    n = data.num_frames
    s = np.linspace(0.0, 1.0, n)

    # 1. objects
    tool_geo = make_tool(tool, rng.uniform(0.9, 1.1), _jitter(TOOL_COLOURS[tool], rng))
    target_geo = make_target(target, rng.uniform(0.9, 1.1), _jitter(TARGET_COLOURS[target], rng))
    n_dense = max(400, round(2500 * (data.height / 416) ** 2))
    tool_pts, _, _ = sample_parts(tool_geo.parts, POINTS_PER_OBJECT, rng)
    target_pts, _, _ = sample_parts(target_geo.parts, POINTS_PER_OBJECT, rng)
    tool_dense = sample_parts(tool_geo.parts, n_dense // 2, rng)
    target_dense = sample_parts(target_geo.parts, n_dense, rng)

    # 2. target pose: a random yaw, and a slight wobble as the left hand steadies it
    yaw = rng.uniform(-0.4, 0.4) + 0.01 * np.sin(2 * np.pi * s + rng.uniform(0, 6))
    R_target = axis_angle(np.broadcast_to([0.0, 0.0, 1.0], (n, 3)), yaw)
    p_target = np.stack([0.003 * np.sin(2 * np.pi * s), 0.002 * np.cos(2 * np.pi * s),
                         0 * s], -1)

    # 3. tool pose: the action's trajectory in the target frame, then into the world
    R_tool_t, grip_t = tool_trajectory(action, s, tool_geo, target_geo, rng)
    grip_t = _lead_in(grip_t, s)
    R_tool = R_target @ R_tool_t
    p_tool = np.einsum("nij,nj->ni", R_target, grip_t) + p_target

    # 4. hands: the right one closes on the tool's handle, the left one on the target's edge
    scale = rng.uniform(0.9, 1.1)
    right, g_r = grasp_handle(scale, tool_geo.handle_radius)
    left_t = _left_hand(target_geo, scale)
    joints = np.concatenate([_rigid(left_t, R_target, p_target),
                             _rigid(right - g_r, R_tool, p_tool)], axis=1)
    points = np.concatenate([_rigid(tool_pts, R_tool, p_tool),
                             _rigid(target_pts, R_target, p_target)], axis=1)

    # 5. camera: in front of the person, looking down at the table, framing the whole clip
    surfels = np.concatenate([_rigid(tool_dense[0], R_tool, p_tool),
                              _rigid(target_dense[0], R_target, p_target)], axis=1)
    az = np.deg2rad(-90 + rng.uniform(-15, 15))
    el = np.deg2rad(rng.uniform(35, 50))
    K = intrinsics(data.height, data.width, fov_y_deg=data.fov_y_deg)
    R_cam, T_cam = frame_camera(np.concatenate([joints, surfels], 1).reshape(-1, 3), az, el, K,
                                fill=rng.uniform(0.75, 0.9))

    # 6. appearance
    normals = np.concatenate([np.einsum("nij,pj->npi", R_tool, tool_dense[1]),
                              np.einsum("nij,pj->npi", R_target, target_dense[1])], axis=1)
    skin = np.array([0.96, 0.78, 0.65]) + rng.uniform(0, 1) * np.array([-0.5, -0.48, -0.43])
    table_hue = rng.uniform(0.25, 0.8, 3)
    look = Look(
        surfels=surfels.astype(np.float32), normals=normals.astype(np.float32),
        surfel_rgb=np.concatenate([tool_dense[2], target_dense[2]]).astype(np.float32),
        skin_rgb=skin.astype(np.float32),
        table_rgb=np.stack([table_hue, table_hue * rng.uniform(0.7, 0.9)]).astype(np.float32),
        wall_rgb=rng.uniform(0.55, 0.9, 3).astype(np.float32),
        table_pattern=int(rng.integers(0, 3)),
        num_tool_surfels=len(tool_dense[0]),
    )
    clip = Clip(
        clip_id=clip_id or f"synthetic-{seed:019d}", prompt=prompt_for(action, target, tool),
        action=action, tool=tool, target=target, split=split, source="synthetic", seed=seed,
        fps=data.fps, joints=joints.astype(np.float32), points=points.astype(np.float32),
        K=K, R=R_cam, T=T_cam,
    )
    return clip.validate(), look
