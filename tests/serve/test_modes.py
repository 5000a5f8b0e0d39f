"""The four modes over HTTP: the checks of a motion, a video and intrinsics (before any
frame is decoded), and motion_to_video / video_to_motion end to end, fed with the files of
an earlier generation."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import requests

from hoi.geometry.motion import NUM_JOINTS, NUM_POINTS
from hoi.render.mp4 import encode_mp4
from serve.uploads import UploadError, check_video, parse_intrinsics, read_motion
from tests.serve.test_app import png, submit, wait_done

N = 9


def _frames(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 48, 3), dtype=np.uint8)


def _mjpeg(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mjpeg", rate=8)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuvj420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_a_video_is_checked_from_its_container_before_decoding() -> None:
    check_video(encode_mp4(_frames(), 8.0), N, 10_000)
    for data, frames, pixels, status, words in [
        (encode_mp4(_frames(5), 8.0), N, 10_000, 422, "has 5 frames; this model reads 9"),
        (encode_mp4(_frames(), 8.0), N, 1000, 413, "48 x 32 pixels"),
        (_mjpeg(_frames()), N, 10_000, 415, "codec is mjpeg"),
        (png(), N, 10_000, 415, "not MP4"),
        (b"\x00\x00\x00\x18ftypmp42" + bytes(100), N, 10_000, 415, "MP4"),
    ]:
        with pytest.raises(UploadError, match=words) as caught:
            check_video(data, frames, pixels)
        assert caught.value.status == status, words


def _motion(scale: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (scale * rng.standard_normal((N, NUM_JOINTS, 3)),
            scale * rng.standard_normal((N, NUM_POINTS, 3)))


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_motion_is_an_npz_or_a_motion_json_in_metres_of_the_models_frames() -> None:
    joints, points = _motion()
    for data in (_npz(joints=joints, points=points),
                 json.dumps({"joints": joints.tolist(), "points": points.tolist()}).encode()):
        got = read_motion(data, N)
        np.testing.assert_allclose(got[0], joints, rtol=1e-6)
        np.testing.assert_allclose(got[1], points, rtol=1e-6)
        assert got[0].dtype == got[1].dtype == np.float32
    nan = joints.copy()
    nan[0, 0, 0] = np.nan
    for data, words in [
        (_npz(joints=joints), "joints and points"),
        (_npz(joints=joints[:5], points=points[:5]), r"shape \(9, 42, 3\)"),
        (_npz(joints=joints, points=points[:, :10]), r"points must be numbers of shape"),
        (_npz(joints=1000 * joints, points=1000 * points), "metres"),
        (_npz(joints=nan, points=points), "NaN"),
        (b"{\"joints\": 1}", "joints and points|shape"),
        (b"PK\x03\x04 not a zip", "not an .npz"),
        (b"\xff\xfe", "neither an .npz nor"),
    ]:
        with pytest.raises(UploadError, match=words):
            read_motion(data, N)


def test_intrinsics_are_a_pinhole_matrix() -> None:
    K = parse_intrinsics("[[60, 0, 24], [0, 60, 16], [0, 0, 1]]")
    assert K.shape == (3, 3) and K.dtype == np.float32
    for text in ("[[1, 0], [0, 1]]", "[[0, 0, 1], [0, 1, 1], [0, 0, 1]]", "nope",
                 "[[1, 0, 0], [0, 1, 0], [0, 0, 2]]", '[[1, 0, 0], [0, "x", 0], [0, 0, 1]]'):
        with pytest.raises(UploadError):
            parse_intrinsics(text)


def _generated(url: str) -> dict:
    status = wait_done(url, submit(url, num_steps=2, seed=3).json()["id"])
    assert status["status"] == "done", status
    return status


def test_motion_to_video_and_video_to_motion_over_http(svimo_url: str) -> None:
    """A joint generation's motion.json and video.mp4 fed back: motion_to_video draws that
    motion (its motion.json is the one given), video_to_motion lifts a motion from that
    video; bad uploads are 4xx before anything is queued."""
    config = requests.get(f"{svimo_url}/v1/config", timeout=10).json()
    assert {"joint", "motion_to_video", "video_to_motion", "video_only"} <= set(config["modes"])
    first = _generated(svimo_url)
    motion = requests.get(svimo_url + first["files"]["motion.json"], timeout=10).content
    video = requests.get(svimo_url + first["files"]["video.mp4"], timeout=10).content

    K = "[[60, 0, 48], [0, 60, 32], [0, 0, 1]]"
    r = requests.post(f"{svimo_url}/v1/generations", timeout=30,
                      data={"prompt": "stir the bowl with the spoon", "num_steps": "2",
                            "mode": "motion_to_video", "K": K},
                      files={"image": ("a.png", png(), "image/png"),
                             "motion": ("motion.json", motion, "application/json")})
    assert r.status_code == 202, r.text
    drawn = wait_done(svimo_url, r.json()["id"])
    assert drawn["status"] == "done" and "video.mp4" in drawn["files"], drawn
    given, out = json.loads(motion), requests.get(
        svimo_url + drawn["files"]["motion.json"], timeout=10).json()
    np.testing.assert_allclose(out["joints"], given["joints"], atol=2e-4)

    r = requests.post(f"{svimo_url}/v1/generations", timeout=30,
                      data={"prompt": "stir the bowl with the spoon", "num_steps": "2",
                            "mode": "video_to_motion"},
                      files={"image": ("a.png", png(), "image/png"),
                             "video": ("clip.mp4", video, "video/mp4")})
    assert r.status_code == 202, r.text
    lifted = wait_done(svimo_url, r.json()["id"])
    assert lifted["status"] == "done" and "motion.json" in lifted["files"], lifted

    for mode, files, fields, code, words in [
        ("video_to_motion", {"video": ("c.mp4", video[:300], "video/mp4")}, {}, 415, "MP4"),
        ("video_to_motion", {"video": ("c.mp4", encode_mp4(_frames(5), 8.0), "video/mp4")},
         {}, 422, "5 frames"),
        ("motion_to_video", {"motion": ("m.json", motion.replace(b"joints", b"hands"),
                                        "application/json")}, {}, 422, "joints and points"),
        ("motion_to_video", {"motion": ("m.json", motion, "application/json")},
         {"K": "[[1, 2], [3, 4]]"}, 422, "3 x 3"),
    ]:
        r = requests.post(f"{svimo_url}/v1/generations", timeout=30,
                          data={"prompt": "stir the bowl", "mode": mode, **fields},
                          files={"image": ("a.png", png(), "image/png"), **files})
        assert r.status_code == code and words in r.text, (mode, r.status_code, r.text)
