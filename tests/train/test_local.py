"""jobs/train_local.py end to end on the tiny flavour: shards in, checkpoints, metrics and
previews out, for every sampling mode."""

from __future__ import annotations

import json

import pytest

from hoi.config import load_config
from hoi.data.prepare import run as prepare
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
    code = main(["--flavour", "svimo-tiny", "--steps", "4", "--mask-steps", "2",
                 "--batch-size", "2", "--sample-steps", "2", "--eval-clips", "2",
                 "--out", str(out), "--prepare.output", shards,
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
    assert len(history) == 6 and all("svimo" in h and "vid" in h for h in history)
    assert not SViMo.from_pretrained(str(out / "svimo")).config.model.motion_attention_mask
    assert SViMo.from_pretrained(str(out / "svimo-masked")).config.model.motion_attention_mask
    VID.from_pretrained(str(out / "vid"))
    for mode in ("joint", "motion_to_video", "video_to_motion"):
        assert (out / "previews" / f"{mode}.png").stat().st_size > 0
    assert (out / "previews-masked" / "video_only.mp4").stat().st_size > 0


def test_bad_encoder_path_is_a_clear_error(tmp_path, capsys):
    code = main(["--flavour", "svimo-tiny", "--encoders.vae", str(tmp_path / "none"),
                 "--encoders.tokenizer", str(tmp_path / "none"),
                 "--encoders.text_encoder", str(tmp_path / "none")])
    assert code == 2
    assert "none" in capsys.readouterr().err
