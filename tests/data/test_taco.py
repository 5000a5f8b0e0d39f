"""MANO forward kinematics and the TACO converter, on the fake TACO data of taco_fixture."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hoi.config import DataConfig
from hoi.data.taco import (
    TacoError,
    convert_sequence,
    crop_box,
    list_sequences,
    load_hand_models,
    read_split_file,
    resample_indices,
    sample_surface,
    sequence_from_key,
)
from hoi.geometry.camera import project
from hoi.geometry.hand import PARENTS
from hoi.geometry.mano import MANO, ManoLoadError, axis_angle_to_matrix
from tests.data.taco_fixture import (
    BACKGROUND,
    LEFT_COLOUR,
    RIGHT_COLOUR,
    TARGET_HALF_CM,
    TIP_VERTICES,
    TOOL_HALF_CM,
    FakeSequence,
    rotation,
    write_mano_models,
    write_sequence,
)

DATA = DataConfig(height=64, width=96, num_frames=49, fps=8.0)
NAME = "20231105_019"


def _randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, dict, FakeSequence]:
    base = tmp_path_factory.mktemp("taco")
    models = write_mano_models(base / "mano")
    return base / "mano", models, write_sequence(base / "TACO", models, NAME)


@pytest.fixture(scope="module")
def hands(fake) -> dict[str, MANO]:
    return load_hand_models(fake[0])


@pytest.fixture(scope="module")
def clip(fake, hands):
    return convert_sequence(list_sequences(fake[2].root)[0], hands, DATA)


# ---------------------------------------------------------------------------------------------
# MANO
# ---------------------------------------------------------------------------------------------


def test_official_and_plain_model_files_load_the_same_arrays(fake, hands):
    _, models, _ = fake
    for side in ("left", "right"):  # left is chumpy/scipy-style, right plain numpy
        np.testing.assert_allclose(hands[side].J_regressor.numpy(), models[side]["J_regressor"],
                                   atol=1e-7)
        np.testing.assert_allclose(hands[side].shapedirs.numpy(), models[side]["shapedirs"],
                                   atol=1e-7)
    assert hands["left"].parents == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)


def test_zero_pose_gives_the_regressed_template_joints(fake, hands):
    _, models, _ = fake
    for side, model in hands.items():
        out = model(torch.zeros(2, 3), torch.zeros(2, 45), betas=torch.zeros(2, 10))
        template = models[side]["v_template"]
        expected = np.concatenate([models[side]["J_regressor"] @ template,
                                   template[list(TIP_VERTICES[side])]])
        np.testing.assert_allclose(out.joints[0].numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(out.vertices[1].numpy(), template, atol=1e-6)


def test_translation_moves_every_joint_and_vertex(hands):
    model = hands["right"]
    orient, pose = _randn(3, 3, seed=1) * 0.5, _randn(3, 45, seed=2) * 0.3
    transl = torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.0, 0.0], [0.0, 0.0, -2.0]])
    still = model(orient, pose)
    moved = model(orient, pose, transl=transl)
    torch.testing.assert_close(moved.joints - still.joints, transl[:, None].expand(-1, 21, -1))
    torch.testing.assert_close(moved.vertices - still.vertices,
                               transl[:, None].expand(-1, 778, -1))


def test_posing_keeps_the_bone_lengths_of_the_joint_tree(hands):
    model = hands["left"]
    betas = _randn(4, 10)
    rest = model(torch.zeros(4, 3), torch.zeros(4, 45), betas=betas).joints
    posed = model(_randn(4, 3, seed=1), _randn(4, 45, seed=2), betas=betas).joints
    bones = [(PARENTS[j], j) for j in range(1, 16)]

    def lengths(joints):
        return torch.stack([(joints[:, c] - joints[:, p]).norm(dim=-1) for p, c in bones], -1)

    torch.testing.assert_close(lengths(posed), lengths(rest), atol=1e-6, rtol=1e-5)
    assert (posed - rest).abs().max() > 0.01  # the pose did move the joints


def test_pca_coefficients_and_hand_mean(fake):
    mano_root, models, _ = fake
    flat = MANO.from_file(mano_root / "MANO_RIGHT.pkl", "right", flat_hand_mean=True)
    mean = MANO.from_file(mano_root / "MANO_RIGHT.pkl", "right", flat_hand_mean=False)
    orient, coeffs = _randn(2, 3, seed=1), _randn(2, 6, seed=2)
    components = torch.as_tensor(models["right"]["hands_components"][:6], dtype=torch.float32)
    torch.testing.assert_close(flat(orient, coeffs, pca=True).joints,
                               flat(orient, coeffs @ components).joints)
    hands_mean = torch.as_tensor(models["right"]["hands_mean"], dtype=torch.float32)
    torch.testing.assert_close(mean(orient, torch.zeros(2, 45)).joints,
                               flat(orient, hands_mean.expand(2, -1)).joints)


def test_axis_angle_to_matrix_is_rodrigues():
    axis_angle = _randn(16, 3, dtype=torch.float64)
    np.testing.assert_allclose(axis_angle_to_matrix(axis_angle).numpy(),
                               rotation(axis_angle.numpy()), atol=1e-12)
    zero = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_model_files_cannot_name_arbitrary_classes(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": Path("not an array")}))
    with pytest.raises(ManoLoadError, match="refusing to load pathlib"):
        MANO.from_file(path, "right", flat_hand_mean=True)


# ---------------------------------------------------------------------------------------------
# TACO: time, objects and crop helpers
# ---------------------------------------------------------------------------------------------


def test_resample_picks_the_nearest_frames_centred():
    indices = resample_indices(200, 49, fps=8.0)
    ideal = (199 - 48 * 3.75) / 2 + 3.75 * np.arange(49)
    assert np.abs(indices - ideal).max() <= 0.5
    assert indices[0] + indices[-1] in (198, 199, 200)  # centred on frames 0 .. 199
    assert resample_indices(181, 49, fps=8.0)[[0, -1]].tolist() == [0, 180]
    with pytest.raises(ValueError, match="need 181 frames at 30 Hz, the sequence has 180"):
        resample_indices(180, 49, fps=8.0)


def test_surface_samples_are_seeded_and_on_the_surface():
    corners = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0]], np.float64)
    faces = np.array([[0, 1, 2]])
    a, b = (sample_surface(corners, faces, 149, np.random.default_rng(3)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, sample_surface(corners, faces, 149, np.random.default_rng(4)))
    assert (a[:, 2] == 0).all() and (a[:, 0] / 2 + a[:, 1] <= 1 + 1e-12).all()


def test_crop_box_is_three_by_two_around_the_points_and_stays_on_the_image():
    uv = np.array([[100.0, 50.0], [140.0, 90.0]])
    left, top, width, height = crop_box(uv, (300, 400), aspect=1.5, margin=0.1)
    assert abs(width / height - 1.5) < 0.02
    assert left <= 100 and top <= 50 and left + width > 140 and top + height > 90
    # Near a border the box shifts onto the image; larger than the image it is centred.
    assert crop_box(uv - 95, (300, 400), 1.5, 0.1)[:2] == (0, 0)
    left, top, width, height = crop_box(np.array([[0.0, 0.0], [399.0, 299.0]]), (300, 400),
                                        1.5, 0.5)
    assert left < 0 and top < 0 and left + width > 400 and top + height > 300


def test_sequence_keys_round_trip(fake):
    seq = list_sequences(fake[2].root)[0]
    assert seq.key == f"{fake[2].triplet}/{NAME}"
    assert sequence_from_key(fake[2].root, seq.key) == seq


def test_split_file(tmp_path):
    (tmp_path / "split.txt").write_text("20230927_032,train\n20231019_072,test_1\n")
    assert read_split_file(tmp_path / "split.txt") == {"20230927_032": "train",
                                                       "20231019_072": "test_1"}


# ---------------------------------------------------------------------------------------------
# TACO: one converted sequence
# ---------------------------------------------------------------------------------------------


def test_converted_clip_has_the_configured_shapes(clip):
    clip.validate(DATA.num_frames, DATA.height, DATA.width)
    assert clip.num_frames == 49 and clip.fps == 8.0 and clip.video.shape == (49, 64, 96, 3)
    assert (clip.action, clip.tool, clip.target) == ("stir", "spoon", "bowl")
    assert clip.prompt == "stir the bowl with the spoon"
    assert clip.clip_id == f"taco-{NAME}" and clip.source == "taco"


def test_joints_follow_taco_mano_convention(fake, clip):
    """Left hand first; wrist at hand_trans; the resampled frames of the sequence."""
    truth = fake[2].joints[resample_indices(len(fake[2].joints), 49, 8.0)]
    np.testing.assert_allclose(clip.joints, truth, atol=1e-5)


def test_object_points_are_mesh_points_in_metres_moved_rigidly(fake, clip):
    seq = fake[2]
    indices = resample_indices(len(seq.joints), 49, 8.0)
    for points, poses, half in ((clip.points[:, :149], seq.tool_poses, TOOL_HALF_CM),
                                (clip.points[:, 149:], seq.target_poses, TARGET_HALF_CM)):
        distances = np.linalg.norm(points[:, :, None] - points[:, None], axis=-1)
        np.testing.assert_allclose(distances, np.broadcast_to(distances[0], distances.shape),
                                   atol=1e-5)
        R, t = poses[indices, :3, :3], poses[indices, :3, 3]
        local_cm = np.einsum("nji,npj->npi", R, points - t[:, None]) * 100
        ratio = np.abs(local_cm) / half
        assert ratio.max() < 1 + 1e-3  # inside the box ...
        np.testing.assert_allclose(ratio.max(-1), 1, atol=1e-3)  # ... and on a face of it


def _projected(clip) -> np.ndarray:
    uv, _ = project(torch.from_numpy(clip.joints), torch.from_numpy(clip.K)[None],
                    torch.from_numpy(clip.R)[None], torch.from_numpy(clip.T)[None])
    return uv.numpy()


def test_projected_joints_land_on_the_drawn_hands(clip):
    uv = _projected(clip)
    assert (uv >= 0).all() and (uv[..., 0] <= 95).all() and (uv[..., 1] <= 63).all()
    pixels = np.rint(uv).astype(int)
    colours = clip.video[np.arange(49)[:, None], pixels[..., 1], pixels[..., 0]].astype(int)
    for joints, colour in ((slice(1, 21), LEFT_COLOUR), (slice(22, 42), RIGHT_COLOUR)):
        assert np.abs(colours[:, joints] - colour).max() < 80


def test_wrists_land_within_a_fraction_of_a_pixel(clip):
    """The white wrist blobs' centroids in the cropped frames against our projection."""
    uv, r = _projected(clip), 3
    errors = []
    for k in range(clip.num_frames):
        for wrist in (0, 21):
            u0, v0 = np.rint(uv[k, wrist]).astype(int)
            rows, cols = np.mgrid[v0 - r:v0 + r + 1, u0 - r:u0 + r + 1]
            weight = np.clip(clip.video[k, rows, cols].min(-1) - float(BACKGROUND), 0, None)
            centroid = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
            errors.append(centroid - uv[k, wrist])
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.35
    # A half-pixel convention slip would bias every wrist by 0.5 (1 - scale) ~ 0.12 px.
    assert np.abs(errors.mean(0)).max() < 0.06


# ---------------------------------------------------------------------------------------------
# TACO: bad input
# ---------------------------------------------------------------------------------------------


def test_too_short_sequence_is_an_error_naming_it(fake, hands, tmp_path):
    write_sequence(tmp_path, fake[1], "20231105_020", num_frames=100)
    with pytest.raises(TacoError, match=r"20231105_020 is too short: .* the sequence has 100"):
        convert_sequence(list_sequences(tmp_path)[0], hands, DATA)


@pytest.mark.parametrize(("missing", "message"), [
    ("Hand_Poses/{triplet}/{name}/right_hand.pkl", "missing right hand poses .*right_hand.pkl"),
    ("Hand_Poses/{triplet}/{name}/left_hand_shape.pkl", "missing left hand shape .*shape.pkl"),
    ("Object_Models/042_cm.obj", "missing target mesh .*042_cm.obj"),
    ("Allocentric_RGB_Videos/{triplet}/{name}/22139908.mp4", "missing allocentric video: no"),
    ("Allocentric_Camera_Parameters/{triplet}/{name}/calibration.json",
     "missing camera calibration .*calibration.json"),
])
def test_missing_file_is_an_error_naming_sequence_and_file(fake, hands, tmp_path, missing,
                                                           message):
    seq = fake[2]
    shutil.copytree(seq.root, tmp_path / "TACO")
    (tmp_path / "TACO" / missing.format(triplet=seq.triplet, name=seq.name)).unlink()
    with pytest.raises(TacoError, match=rf"{NAME}: {message}"):
        convert_sequence(list_sequences(tmp_path / "TACO")[0], hands, DATA)


def test_unknown_camera_serial_is_an_error(fake, hands):
    with pytest.raises(TacoError, match=rf"{NAME}: missing allocentric video .*/123.mp4"):
        convert_sequence(list_sequences(fake[2].root)[0], hands, DATA, camera="123")


def test_missing_object_pose_and_mano_model_and_root(fake, hands, tmp_path):
    seq = fake[2]
    shutil.copytree(seq.root, tmp_path / "TACO")
    (tmp_path / "TACO" / "Object_Poses" / seq.triplet / seq.name / "tool_017.npy").unlink()
    with pytest.raises(TacoError, match=rf"{NAME}: expected one Object_Poses/tool_<id>.npy"):
        convert_sequence(list_sequences(tmp_path / "TACO")[0], hands, DATA)
    with pytest.raises(TacoError, match="missing MANO model .*MANO_LEFT.pkl"):
        load_hand_models(tmp_path)
    with pytest.raises(TacoError, match="no Hand_Poses folder"):
        list_sequences(tmp_path)
