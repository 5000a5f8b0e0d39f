"""SViMoPipeline: loading from every kind of path, each mode, determinism, bad input, and the
files a generation writes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hoi.config import StorageConfig
from hoi.outputs import RESULT_NAME, read_result, write_generation
from hoi.pipeline import InputError, SViMoPipeline, find_model, fit_image
from hoi.storage import join, write_bytes
from hoi.untrained import write_untrained_model

PROMPT = "stir the bowl with the spoon"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("model")
    return write_untrained_model(str(root), StorageConfig(), ["--model.motion_attention_mask", "true"])


@pytest.fixture(scope="module")
def pipe(model_dir: str) -> SViMoPipeline:
    return SViMoPipeline.from_pretrained(model_dir)


def image(height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_mode_gives_the_model_sized_outputs(pipe: SViMoPipeline) -> None:
    n, h, w = pipe.frame_size
    rng = np.random.default_rng(0)
    given = {"motion_to_video": {"joints": rng.normal(0, 0.05, (n, 42, 3)) + [0, 0, 0.6],
                                 "points": rng.normal(0, 0.05, (n, 298, 3)) + [0, 0, 0.6]},
             "video_to_motion": {"video": image(h, w)[None].repeat(n, 0)}}
    steps = []
    for mode in pipe.modes:
        out = pipe(image(), PROMPT, num_steps=3, mode=mode, progress=lambda i, t: steps.append(i),
                   **given.get(mode, {}))
        assert out.video.shape == (n, h, w, 3) and out.video.dtype == np.uint8
        if mode == "video_only":
            assert out.joints is None and out.motion_video is None
            continue
        assert out.joints.shape == (n, 42, 3) and out.points.shape == (n, 298, 3)
        assert out.motion_video.shape == (n, h, w, 3)
        if mode == "motion_to_video":  # the given motion comes back as given
            np.testing.assert_allclose(out.joints, given[mode]["joints"], atol=1e-5)
    assert steps == [1, 2, 3] * len(pipe.modes)


def test_same_seed_same_sample_other_seed_other_sample(pipe: SViMoPipeline) -> None:
    a = pipe(image(), PROMPT, num_steps=2, seed=5)
    b = pipe(image(), PROMPT, num_steps=2, seed=5)
    c = pipe(image(), PROMPT, num_steps=2, seed=6)
    np.testing.assert_array_equal(a.video, b.video)
    np.testing.assert_array_equal(a.joints, b.joints)
    assert not np.array_equal(a.joints, c.joints)


def test_images_of_any_size_and_encoding_are_fitted(pipe: SViMoPipeline) -> None:
    buf = io.BytesIO()
    Image.fromarray(image(300, 200)).save(buf, format="JPEG")
    out = pipe(buf.getvalue(), PROMPT, num_steps=1)
    assert out.video.shape[1:3] == pipe.frame_size[1:]
    # centre crop to the aspect, then resize: a centred square stays centred
    frame = np.zeros((100, 300, 3), np.uint8)
    frame[40:60, 140:160] = 255
    fitted = fit_image(frame, 64, 96)
    rows, cols = np.nonzero(fitted[..., 0] > 128)
    assert abs(rows.mean() - 31.5) < 1.5 and abs(cols.mean() - 47.5) < 1.5


@pytest.mark.parametrize("kwargs, words", [
    ({"image": b"not an image"}, "PNG, JPEG"),
    ({"image": np.zeros((8, 8), np.uint8)}, "(H, W, 3)"),
    ({"prompt": ""}, "empty"),
    ({"prompt": "stir " * 40}, "T5 tokens"),
    ({"mode": "dance"}, "not one of"),
    ({"num_steps": 0}, "num_steps"),
    ({"mode": "motion_to_video"}, "needs joints"),
    ({"mode": "motion_to_video", "joints": np.zeros((3, 42, 3)), "points": np.zeros((3, 298, 3))},
     "motion must be"),
    ({"mode": "video_to_motion"}, "needs a video"),
    ({"mode": "video_to_motion", "video": b"\x00" * 100}, "could not be decoded"),
])
def test_bad_input_is_an_input_error_that_says_what_to_change(pipe: SViMoPipeline, kwargs,
                                                              words: str) -> None:
    call = {"image": image(), "prompt": PROMPT, "num_steps": 1, **kwargs}
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        pipe(call.pop("image"), call.pop("prompt"), **call)


def test_video_only_needs_a_masked_model(tmp_path: Path) -> None:
    unmasked = SViMoPipeline.from_pretrained(write_untrained_model(str(tmp_path), StorageConfig()))
    assert "video_only" not in unmasked.modes
    with pytest.raises(InputError, match="motion_attention_mask"):
        unmasked(image(), PROMPT, mode="video_only", num_steps=1)


def _checkpoint(run: Path, step: int, model_dir: str) -> Path:
    """A checkpoint directory as training leaves it: model/ and a train_state.json listing
    every file."""
    directory = run / f"checkpoint-{step:08d}"
    shutil.copytree(model_dir, directory / "model")
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    (directory / "train_state.json").write_text(json.dumps({"step": step, "files": files}))
    return directory


def _upload(directory: Path, root: str, storage: StorageConfig) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            write_bytes(join(root, path.relative_to(directory).as_posix()), path.read_bytes(),
                        storage)


def test_loads_from_a_run_a_checkpoint_or_s3(model_dir: str, tmp_path: Path, s3) -> None:
    run = tmp_path / "run"
    for step in (3, 7):
        _checkpoint(run, step, model_dir)
    shutil.copytree(model_dir, run / "checkpoint-00000009" / "model")  # no state: incomplete
    # a half-uploaded checkpoint: its state lists weights that are not there (yet)
    (_checkpoint(run, 8, model_dir) / "model" / "svimo" / "model.safetensors").unlink()
    assert find_model(str(run), StorageConfig()) == str(run / "checkpoint-00000007" / "model")
    assert find_model(str(run / "checkpoint-00000003"), StorageConfig()).endswith(
        "checkpoint-00000003/model")
    for incomplete in ("checkpoint-00000008", "checkpoint-00000009"):
        with pytest.raises(FileNotFoundError, match="the checkpoint is incomplete"):
            find_model(str(run / incomplete), StorageConfig())
    with pytest.raises(FileNotFoundError, match="no complete checkpoint-"):
        find_model(str(tmp_path), StorageConfig())
    with pytest.raises(FileNotFoundError, match="nothing at"):
        find_model(str(tmp_path / "absent"), StorageConfig())
    # the same run on S3: the same choice
    s3_run = s3.fresh_root()
    _upload(run, s3_run, s3.storage)
    assert find_model(s3_run, s3.storage) == f"{s3_run}/checkpoint-00000007/model"

    root = s3.fresh_root()
    _upload(Path(model_dir).parent, root, s3.storage)  # the model and its codec
    local = SViMoPipeline.from_pretrained(model_dir)
    remote = SViMoPipeline.from_pretrained(
        f"{root}/model", s3.storage, vae=f"{root}/codec/vae",
        text_encoder=f"{root}/codec/text_encoder", tokenizer=f"{root}/codec/tokenizer")
    a, b = (p(image(), PROMPT, num_steps=1, seed=1) for p in (local, remote))
    np.testing.assert_array_equal(a.video, b.video)


def test_written_generation_has_every_file_and_result_last(pipe: SViMoPipeline,
                                                           tmp_path: Path) -> None:
    gen = pipe(image(), PROMPT, num_steps=2, seed=3)
    out = str(tmp_path / "gen")
    assert read_result(out, StorageConfig()) is None
    result = write_generation(gen, out, StorageConfig(), extra={"id": "g1"})
    assert set(result["files"]) == {"video.mp4", "motion_video.mp4", "preview.mp4",
                                    "preview.png", "motion.npz", "motion.json"}
    assert read_result(out, StorageConfig()) == result and result["id"] == "g1"
    assert {p.name for p in (tmp_path / "gen").iterdir()} == {*result["files"], RESULT_NAME}
    motion = json.loads((tmp_path / "gen" / "motion.json").read_text())
    np.testing.assert_allclose(motion["joints"], gen.joints, atol=1e-4)
    assert motion["num_frames"] == gen.video.shape[0] and motion["points_per_object"] == 149
    with np.load(tmp_path / "gen" / "motion.npz") as npz:
        np.testing.assert_array_equal(npz["points"], gen.points)
