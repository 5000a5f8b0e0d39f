"""jobs/prepare.py and hoi.data.prepare: shards, manifest, previews, resume, S3, TACO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from hoi.config import load_config
from hoi.data.prepare import MANIFEST, PrepareError, run
from hoi.data.schema import row_to_clip
from hoi.data.shards import read_clips, shard_path
from hoi.data.synthetic import generate_clip
from hoi.geometry.camera import project

REPO = Path(__file__).resolve().parents[2]


def tiny(output, *extra: str):
    return load_config(flavour="svimo-tiny", overrides=[
        "--prepare.output", str(output), "--prepare.num_train", "6", "--prepare.num_val", "2",
        "--prepare.clips_per_shard", "4", "--prepare.num_preview", "2", *extra])


def read_rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_synthetic_shards_manifest_and_previews(ray_local, tmp_path):
    cfg = tiny(tmp_path / "shards")
    manifest = run(cfg, progress=False)

    assert manifest["status"] == "complete" and manifest["built_this_run"] == 8
    assert {k: (v["clips"], v["shards"]) for k, v in manifest["splits"].items()} == {
        "train": (6, 2), "val": (2, 1)}
    assert json.loads((tmp_path / "shards" / MANIFEST).read_text()) == manifest

    rows = read_rows(shard_path(str(tmp_path / "shards"), "train", 0))
    assert [r["clip_id"] for r in rows] == [f"train-{i:06d}" for i in range(4)]
    for row in rows:
        clip = row_to_clip(row, cfg.data.num_frames, cfg.data.height, cfg.data.width)
        # the stored motion matches a fresh generation from the recorded seed
        again, _ = generate_clip(clip.seed, cfg.data)
        np.testing.assert_array_equal(clip.joints, again.joints)
        # the motion video draws every joint where the camera projects it
        uv, _ = project(*(torch.from_numpy(x) for x in (clip.joints, clip.K, clip.R, clip.T)))
        uv = uv.numpy()
        col = np.clip(np.round(uv[..., 0]).astype(int), 0, cfg.data.width - 1)
        row_ = np.clip(np.round(uv[..., 1]).astype(int), 0, cfg.data.height - 1)
        frames = np.arange(clip.num_frames)[:, None]
        assert (clip.motion_video[frames, row_, col].max(-1) > 0).mean() > 0.99

    previews = manifest["previews"]
    assert len(previews) == 4 and sum(p.endswith(".png") for p in previews) == 2
    png = iio.imread(next(p for p in previews if p.endswith(".png")))
    assert png.ndim == 3 and png.shape[0] > cfg.data.height and png.std() > 10
    mp4 = iio.imread(next(p for p in previews if p.endswith(".mp4")), plugin="pyav")
    assert len(mp4) == cfg.data.num_frames


def test_rerun_resumes_and_rebuilds_only_missing_or_broken_shards(ray_local, tmp_path):
    cfg = tiny(tmp_path / "shards", "--prepare.num_preview", "0")
    run(cfg, progress=False)
    kept = Path(shard_path(cfg.prepare.output, "train", 0))
    kept_bytes, kept_mtime = kept.read_bytes(), kept.stat().st_mtime_ns
    Path(shard_path(cfg.prepare.output, "train", 1)).unlink()  # 2 clips
    broken = Path(shard_path(cfg.prepare.output, "val", 0))  # 2 clips
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])

    manifest = run(cfg, progress=False)
    assert manifest["built_this_run"] == 4
    assert kept.stat().st_mtime_ns == kept_mtime and kept.read_bytes() == kept_bytes
    assert len(read_rows(broken)) == 2
    assert manifest["splits"]["train"]["clips"] == 6

    again = run(cfg, progress=False)  # nothing left to do
    assert again["built_this_run"] == 0 and again["splits"] == manifest["splits"]


def test_growing_the_run_adds_shards(ray_local, tmp_path):
    cfg = tiny(tmp_path / "shards", "--prepare.num_preview", "0")
    run(cfg, progress=False)
    bigger = tiny(tmp_path / "shards", "--prepare.num_preview", "0", "--prepare.num_train", "10")
    manifest = run(bigger, progress=False)
    # shard 1 grows from 2 to 4 clips and shard 2 is new: 2 + 2 rebuilt/added... plus 4 rows
    assert manifest["splits"]["train"] == {"clips": 10, "shards": 3,
                                           "bytes": manifest["splits"]["train"]["bytes"]}
    assert manifest["built_this_run"] == 4 + 2


def test_different_settings_never_mix_into_an_existing_output(ray_local, tmp_path):
    run(tiny(tmp_path / "shards", "--prepare.num_preview", "0"), progress=False)
    with pytest.raises(PrepareError, match="different settings"):
        run(tiny(tmp_path / "shards", "--data.num_frames", "13"), progress=False)
    with pytest.raises(PrepareError, match="different settings"):
        run(tiny(tmp_path / "shards", "--prepare.seed", "1"), progress=False)


def test_prepare_to_s3(ray_local, s3):
    root = s3.fresh_root()
    cfg = tiny(root, "--storage.endpoint_url", s3.endpoint_url, "--prepare.video_encoding", "mp4")
    manifest = run(cfg, progress=False)
    assert manifest["splits"]["train"]["clips"] == 6
    assert all(p.startswith(root) for p in manifest["previews"])
    ds = read_clips(root, s3.storage, split="train", num_frames=cfg.data.num_frames,
                    height=cfg.data.height, width=cfg.data.width)
    assert sorted(r["clip_id"] for r in ds.take_all()) == [f"train-{i:06d}" for i in range(6)]


def test_taco_directory_becomes_shards(ray_local, tmp_path):
    from tests.data.taco_fixture import write_mano_models, write_sequence

    models = write_mano_models(tmp_path / "mano")
    write_sequence(tmp_path / "TACO", models, "20231105_001")
    write_sequence(tmp_path / "TACO", models, "20231105_002", seed=1)
    (tmp_path / "split.txt").write_text("20231105_001,train\n20231105_002,test\n")
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--prepare.source", "taco", "--prepare.taco_root", str(tmp_path / "TACO"),
        "--prepare.mano_root", str(tmp_path / "mano"),
        "--prepare.taco_split_file", str(tmp_path / "split.txt"),
        "--prepare.output", str(tmp_path / "shards"), "--prepare.num_preview", "1"])
    manifest = run(cfg, progress=False)
    assert {k: v["clips"] for k, v in manifest["splits"].items()} == {"train": 1, "test": 1}
    clip = row_to_clip(read_rows(shard_path(cfg.prepare.output, "test", 0))[0])
    assert clip.source == "taco" and clip.clip_id == "taco-20231105_002"
    assert clip.video.shape == (cfg.data.num_frames, cfg.data.height, cfg.data.width, 3)
    assert clip.motion_video.max() > 0


def test_cli_rejects_a_misspelt_key_before_starting_ray():
    result = subprocess.run(
        [sys.executable, "jobs/prepare.py", "--flavour", "svimo-tiny", "--prepare.num_trian", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "did you mean 'prepare.num_train'" in result.stderr
