import numpy as np
import pytest

from hoi.config import ConfigError, load_config
from hoi.data.shapes import TARGET_COLOURS, TOOL_COLOURS
from hoi.data.synthetic import MIN_DEPTH, clip_seed, generate_clip, split_clip
from hoi.geometry.hand import (
    BONES,
    FINGER_JOINTS,
    FINGER_RADIUS,
    FINGERS,
    JOINTS_PER_HAND,
    _segment_distances,
    grasp_handle,
)
from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS, POINTS_PER_OBJECT
from hoi.vocabulary import ACTIONS, HELDOUT_SPLIT, TARGETS, TOOLS

DATA = load_config(flavour="svimo-small").data


def _bone_lengths(joints):
    """(N, 40) lengths of every bone of both hands."""
    return np.stack([np.linalg.norm(joints[:, h * 21 + c] - joints[:, h * 21 + p], axis=-1)
                     for h in range(2) for p, c in BONES], axis=1)


def test_catalogue_is_large_enough_and_categories_look_different():
    assert len(ACTIONS) >= 6 and len(TOOLS) >= 5 and len(TARGETS) >= 5
    for colours in (TOOL_COLOURS, TARGET_COLOURS):
        values = np.array(list(colours.values()))
        gaps = np.linalg.norm(values[:, None] - values[None], axis=-1) + np.eye(len(values))
        assert gaps.min() > 0.1, "two categories share a colour: the first frame would not tell"


def test_same_seed_same_clip_and_different_seeds_differ():
    a, look_a = generate_clip(1234, DATA)
    b, look_b = generate_clip(1234, DATA)
    c, _ = generate_clip(1235, DATA)
    for name in ("joints", "points", "K", "R", "T"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(look_a.surfels, look_b.surfels)
    assert a.prompt == b.prompt
    assert not np.allclose(a.points, c.points)


def test_clip_seeds_are_distinct_per_split_and_index():
    seeds = {clip_seed(0, split, i) for split in ("train", "val") for i in range(500)}
    assert len(seeds) == 1000


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_shapes_prompt_and_invariants(action):
    clip, look = generate_clip(clip_seed(7, "train", sorted(ACTIONS).index(action)), DATA,
                                action=action)
    n = DATA.num_frames
    assert clip.joints.shape == (n, NUM_JOINTS, 3) and clip.points.shape == (n, NUM_POINTS, 3)
    assert clip.prompt == f"{action} the {clip.target} with the {clip.tool}"
    assert clip.tool in ACTIONS[action][0] and clip.target in ACTIONS[action][1]

    # bones keep their length over time and have human sizes: phalanges 1.5-5.5 cm,
    # metacarpals (wrist to knuckle) 2.5-10 cm
    lengths = _bone_lengths(clip.joints)
    np.testing.assert_allclose(lengths, lengths[:1].repeat(n, 0), atol=1e-6)
    metacarpal = np.array([p == 0 for _ in range(2) for p, _c in BONES])
    assert 0.015 < lengths[:, ~metacarpal].min() and lengths[:, ~metacarpal].max() < 0.055
    assert 0.025 < lengths[:, metacarpal].min() and lengths[:, metacarpal].max() < 0.11

    # each object moves rigidly: pairwise distances constant over time
    for half in (clip.points[:, :POINTS_PER_OBJECT], clip.points[:, POINTS_PER_OBJECT:]):
        d = np.linalg.norm(half[:, :, None] - half[:, None], axis=-1)
        np.testing.assert_allclose(d, d[:1].repeat(n, 0), atol=1e-5)

    # nothing goes through the table
    assert clip.joints[..., 2].min() > -1e-3 and clip.points[..., 2].min() > -1e-3

    # everything is in front of the camera and inside the image
    cam = clip.joints @ clip.R.T + clip.T
    assert cam[..., 2].min() > MIN_DEPTH - 1e-3
    uv = (cam @ clip.K.T)[..., :2] / cam[..., 2:]
    assert (uv >= 0).all() and (uv[..., 0] < DATA.width).all() and (uv[..., 1] < DATA.height).all()


@pytest.mark.parametrize("radius", [0.005, 0.01, 0.02])
def test_fingers_close_until_they_touch_the_handle(radius):
    joints, g = grasp_handle(1.0, radius)
    contact = radius + FINGER_RADIUS
    for name in FINGERS:
        gaps = _segment_distances(joints[list(FINGER_JOINTS[name])], g) - contact
        assert gaps.min() < 0.002, f"{name} never reaches the handle"
        assert gaps.min() > -0.006, f"{name} goes through the handle"
    # a closed hand: the long fingers wrap below the handle, towards the palm
    for name in ("index", "middle", "ring", "pinky"):
        knuckle, *_, tip = FINGER_JOINTS[name]
        assert joints[tip, 2] < g[2] < joints[knuckle, 2]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_right_hand_holds_the_tool_left_hand_the_target(action):
    data = load_config(flavour="svimo-5b").data  # dense surfels: distances measure the hand
    clip, look = generate_clip(clip_seed(3, "train", 5), data, action=action)
    frames = slice(None, None, 8)
    tool = look.surfels[frames, :look.num_tool_surfels]
    target = look.surfels[frames, look.num_tool_surfels:]

    def distance(joints, surface):  # (N, J): each joint to the nearest surfel
        return np.median(np.linalg.norm(joints[:, :, None] - surface[:, None], axis=-1).min(-1))

    fingers = [j for name in ("index", "middle", "ring", "pinky") for j in FINGER_JOINTS[name][1:]]
    right = clip.joints[frames, JOINTS_PER_HAND:][:, fingers]
    left = clip.joints[frames, :JOINTS_PER_HAND][:, fingers]
    assert distance(right, tool) < 0.02  # a finger radius and a bit
    assert distance(right, tool) < distance(right, target) / 2
    assert distance(left, target) < 0.045
    assert distance(left, target) < distance(left, tool)


def test_actions_have_distinct_trajectories():
    """Tool motion relative to the target: spatial extent per axis and rotation over the clip."""
    def descriptor(action):
        out = []
        for k in range(3):
            clip, _ = generate_clip(clip_seed(11, "train", k), DATA, action=action)
            tool = clip.points[:, :POINTS_PER_OBJECT] - clip.points[:, POINTS_PER_OBJECT:].mean(1,
                                                                                            keepdims=True)
            centre = tool.mean(1)
            axis = tool[:, 0] - centre  # a body-fixed direction: how far the tool turns
            cos = (axis * axis[:1]).sum(-1) / (np.linalg.norm(axis, axis=-1) * np.linalg.norm(axis[0]))
            out.append([*np.ptp(centre, axis=0), np.arccos(np.clip(cos, -1, 1)).max() / 10,
                        np.abs(np.diff(centre, 2, axis=0)).mean() * 10])
        return np.mean(out, axis=0)

    desc = {a: descriptor(a) for a in sorted(ACTIONS)}
    names = sorted(desc)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.linalg.norm(desc[a] - desc[b]) > 2e-3, f"{a} and {b} move alike"


def test_a_held_out_combination_stays_out_of_train_and_val():
    data = load_config(flavour="svimo-tiny").data
    combos = lambda clips: {(c.action, c.target) for c in clips}  # noqa: E731
    plain = [split_clip(0, "train", i, data)[0] for i in range(30)]
    assert ("scoop", "cup") in combos(plain)
    kept = [split_clip(0, split, i, data, "scoop:cup")[0]
            for split in ("train", "val") for i in range(30)]
    assert ("scoop", "cup") not in combos(kept) and len(combos(kept)) > 10
    # a clip that avoided the combination anyway keeps its seed (the split is otherwise the same)
    for a, b in zip(plain, kept[:30], strict=True):
        assert (a.seed == b.seed) == ((a.action, a.target) != ("scoop", "cup"))
    held = [split_clip(0, HELDOUT_SPLIT, i, data, "scoop:cup")[0] for i in range(6)]
    assert combos(held) == {("scoop", "cup")} and len({c.tool for c in held}) == 2
    for bad, message in (("scoop:board", "applies to"), ("jump:cup", "the action must be"),
                         ("scoop", "applies to")):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=["--prepare.holdout", bad])
    with pytest.raises(ConfigError, match="num_heldout needs prepare.holdout"):
        load_config(overrides=["--prepare.num_heldout", "2"])
