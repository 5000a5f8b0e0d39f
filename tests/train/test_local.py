"""jobs/train_local.py end to end on the tiny flavour: shards in, checkpoints, metrics and
previews out, for every sampling mode."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from hoi.config import load_config
from hoi.data.prepare import run as prepare
from hoi.metrics.motion import object_centre_error, object_chamfer, point_error
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from jobs.train_local import main
from tests.diffusion.tiny import build_parts


@pytest.mark.slow
def test_train_local_job(tmp_path, ray_local):
    shards = str(tmp_path / "shards")
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--prepare.output", shards, "--prepare.num_train", "4", "--prepare.num_val", "2",
        "--prepare.clips_per_shard", "2", "--prepare.num_preview", "0"])
    prepare(cfg, progress=False)
    parts = build_parts(cfg)
    codec = tmp_path / "codec"
    parts.vae.vae.save_pretrained(codec / "vae")
    parts.text_encoder.model.save_pretrained(codec / "text_encoder")
    parts.text_encoder.tokenizer.save_pretrained(codec / "tokenizer")
    out = tmp_path / "local"
    code = main(["--flavour", "svimo-tiny", "--train.steps", "4", "--local.mask_steps", "2",
                 "--train.batch_size", "2", "--sample.num_steps", "2", "--local.eval_clips", "2",
                 "--local.output", str(out), "--prepare.output", shards,
                 "--loop.vid_warmup_steps", "2",
                 "--encoders.vae", str(codec / "vae"),
                 "--encoders.tokenizer", str(codec / "tokenizer"),
                 "--encoders.text_encoder", str(codec / "text_encoder")])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"reference", "joint", "motion_to_video", "video_to_motion",
                            "masked_reference", "masked_joint", "masked_video_only"}
    assert metrics["motion_to_video"]["mpjpe_mm"] == 0.0      # the given motion comes back
    assert metrics["joint"]["mpjpe_mm"] > 0 and "mpjpe_mm" not in metrics["masked_video_only"]
    # with the mask, joint sampling's video is the video-only one
    assert metrics["masked_joint"]["video_psnr_db"] == pytest.approx(
        metrics["masked_video_only"]["video_psnr_db"], abs=1e-3)
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(6)) and all("vid" in h for h in history)
    # VID warms up alone for 2 steps; the masked stage goes on from step 4, without a second
    # warm-up (regression: it restarted at step 0 and spent its steps on VID alone)
    assert ["svimo" in h for h in history] == [False, False, True, True, True, True]
    assert {"object_chamfer_cm2", "object_centre_mm", "joints_px",
            "object_centre_px"} <= set(metrics["video_to_motion"])
    assert metrics["motion_to_video"]["joints_px"] == 0.0 < metrics["reference"]["joints_px"]
    assert not SViMo.from_pretrained(str(out / "svimo")).config.model.motion_attention_mask
    assert SViMo.from_pretrained(str(out / "svimo-masked")).config.model.motion_attention_mask
    vid, vid_masked = (VID.from_pretrained(str(out / name)) for name in ("vid", "vid-masked"))
    # the masked stage trains VID on: its VID is saved with it
    before, after = vid.state_dict(), vid_masked.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for mode in ("joint", "motion_to_video", "video_to_motion"):
        assert (out / "previews" / f"{mode}.png").stat().st_size > 0
    assert (out / "previews-masked" / "video_only.mp4").stat().st_size > 0
    # galleries: 2 clips x 4 panels; in motion_to_video the generated motion is the given one,
    # so its overlay panel is the true motion's (drawn from camera-frame instead of world
    # coordinates: a rounding may move a stamp's edge pixel)
    for mode in ("joint", "video_to_motion", "motion_to_video"):
        picture = iio.imread(out / "previews" / f"{mode}-gallery.png")
        assert picture.shape == (2 * 8 * 32, 4 * 8 * 48, 3)
    panels = np.split(picture, 4, axis=1)
    assert (panels[2] == panels[3]).all(-1).mean() > 0.99
    assert not (out / "previews-masked" / "video_only-gallery.png").exists()


def test_bad_encoder_path_is_a_clear_error(tmp_path, capsys):
    code = main(["--flavour", "svimo-tiny", "--encoders.vae", str(tmp_path / "none"),
                 "--encoders.tokenizer", str(tmp_path / "none"),
                 "--encoders.text_encoder", str(tmp_path / "none")])
    assert code == 2
    assert "none" in capsys.readouterr().err


def test_object_metrics_ignore_point_order_and_measure_offsets():
    """Points are learned with a Chamfer loss, so their order is free: a permuted object is
    a perfect object for the Chamfer and centre metrics, not for the per-index error."""
    points = torch.randn(2, 3, 298, 3, generator=torch.Generator().manual_seed(0)) * 0.05
    shuffled = torch.cat([points[:, :, :149].flip(2), points[:, :, 149:].roll(7, 2)], dim=2)
    assert point_error(shuffled, points).min() > 0.01
    assert object_chamfer(shuffled, points).abs().max() < 1e-6
    assert object_centre_error(shuffled, points).abs().max() < 1e-6
    # the tool moved 3 cm and the target not at all: the centre error is their mean, 1.5 cm
    moved = points.clone()
    moved[:, :, :149, 0] += 0.03
    torch.testing.assert_close(object_centre_error(moved, points), torch.full((2,), 0.015))
    # squared distances: at most (3 cm)^2 each way for the tool, halved over the two objects
    assert 0.0 < object_chamfer(moved, points).min() <= 0.03 ** 2 + 1e-9
