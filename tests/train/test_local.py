"""jobs/train_local.py end to end on the tiny flavour: shards in, checkpoints, metrics and
previews out, for every sampling mode."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from hoi.config import load_config
from hoi.data.prepare import run as prepare
from hoi.diffusion.sampler import Sampler
from hoi.metrics.motion import object_centre_error, object_chamfer, point_error
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.train.local import follows_motion
from jobs.train_local import main
from tests.diffusion.tiny import build_parts, clip_batch


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
    assert metrics["motion_to_video"]["mpjpe_se_mm"] == 0.0 < metrics["joint"]["mpjpe_se_mm"]
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
    # the motion stream's video against the 3D motion, in every mode that makes motion
    for mode in ("joint", "motion_to_video", "video_to_motion"):
        assert 0 <= metrics[mode]["consistency_hit_rate"] <= 1, mode
        assert metrics[mode]["consistency_hit_rate_se"] >= 0
    assert "consistency_hit_rate" not in metrics["masked_video_only"]
    # the video driven by each clip's motion against another clip's (issue 22's measure)
    follows = metrics["motion_to_video"]
    assert follows["psnr_gain_db"] == pytest.approx(
        follows["video_psnr_db"] - follows["other_motion_video_psnr_db"], abs=1e-4)
    assert follows["read_mpjpe_driving_mm"] > 0 and follows["read_mpjpe_other_mm"] > 0
    assert math.isfinite(follows["change_where_driven_grey"])
    driven = np.split(iio.imread(out / "previews" / "motion_to_video-driven.png"), 5, axis=1)
    assert driven[0].shape == (2 * 8 * 32, 8 * 48, 3)
    assert not (driven[0] == driven[2]).all()  # the two clips' motion videos


def test_one_motion_for_every_clip_drives_them_alike():
    """follows_motion compares the own motion with another clip's from the same first frame,
    prompt and noise: when every clip has the same motion, the two arms are the same
    samples, and every figure of the comparison is even."""
    cfg = load_config(flavour="svimo-tiny")
    parts = build_parts(cfg, perturb=0.02)
    batch = clip_batch(parts, [0, 1])
    batch.motion = batch.motion[:1].expand_as(batch.motion).clone()
    batch.K = batch.K[:1].expand_as(batch.K).clone()
    sampler = Sampler(cfg, parts.svimo.eval(), parts.vid.eval(), parts.vae)
    own = sampler(batch.image_latent, batch.text, batch.K, mode="motion_to_video", num_steps=2,
                  null_text=parts.null_text, generator=torch.Generator().manual_seed(5),
                  motion=batch.motion).video_latent
    gt_video = parts.vae.decode(batch.video_latent)
    row = follows_motion(cfg, sampler, batch, own, gt_video, parts.null_text, seed=5,
                         num_steps=2)
    assert row["psnr_gain_db"] == 0.0 and row["psnr_gain_se_db"] == 0.0
    assert row["read_mpjpe_driving_mm"] == row["read_mpjpe_other_mm"] > 0
    assert math.isnan(row["change_where_driven_grey"])  # no pixel only one motion covers
    # with two motions the arms differ
    other = clip_batch(parts, [0, 1])
    other_own = sampler(other.image_latent, other.text, other.K, mode="motion_to_video",
                        num_steps=2, null_text=parts.null_text,
                        generator=torch.Generator().manual_seed(5),
                        motion=other.motion).video_latent
    row = follows_motion(cfg, sampler, other, other_own, gt_video, parts.null_text, seed=5,
                         num_steps=2)
    assert row["psnr_gain_db"] != 0.0
    assert row["read_mpjpe_driving_mm"] != row["read_mpjpe_other_mm"]
    assert math.isfinite(row["change_where_driven_grey"])
    assert row["change_where_driven_se_grey"] >= 0


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
