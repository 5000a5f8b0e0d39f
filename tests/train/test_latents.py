"""Precomputed latents: the encode pass writes what the online stream would encode, resumes,
refuses other encoders; a run on them trains as a run that encodes online does, and resumes
mid-stage from the checkpoint's row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from hoi.config import StorageConfig, load_config
from hoi.data.schema import LATENT_ARRAYS, get_array
from hoi.data.shards import collate_clips, latent_twin, list_shards, load_clips
from hoi.model.encoders import load_encoders
from hoi.train.data import Encoder, resume_start
from hoi.train.job import TrainError, fit, preflight
from hoi.train.latents import MANIFEST, LatentsError, encode_pass
from tests.train.inputs import write_train_inputs, write_val_clips
from tests.train.test_train_job import RUN, _losses

LOCAL = StorageConfig()
STAGES = ["--train.steps", "3", "--train.stages", "[[16, 32, 1], [32, 48, 2]]"]


def _inputs(root: Path) -> list[str]:
    overrides = write_train_inputs(str(root), LOCAL)
    write_val_clips(f"{root}/shards", LOCAL)
    return [*overrides, "--prepare.output", f"{root}/shards"]


def test_the_encode_pass_writes_what_the_stream_encodes_resumes_and_refuses_other_encoders(
        tmp_path, ray_local):
    cfg = load_config(overrides=[*_inputs(tmp_path), *STAGES, "--train.batch_size", "2"])
    first = encode_pass(cfg, progress=False)
    shards = f"{tmp_path}/shards"
    assert first["encoded_this_run"] == 2 * (8 + 2)  # train and val, at both stage sizes
    assert first["sizes"] == [[16, 32], [32, 48]]
    # every row equals the online stream's encoder on the clip alone (not in its batch)
    clips = load_clips(shards, "train", cfg.data, LOCAL)
    for height, width in ((16, 32), (32, 48)):
        encoder = Encoder(cfg.to_dict(), height, width)
        rows = [r for path in list_shards(shards, LOCAL, "train")
                for r in pq.read_table(latent_twin(shards, path, height, width)).to_pylist()]
        assert [r["clip_id"] for r in rows] == [c.clip_id for c in clips]
        for clip, row in zip(clips[:3], rows, strict=False):
            online = encoder.encode(collate_clips([clip]))
            for name in LATENT_ARRAYS:
                stored = torch.from_numpy(get_array(row, name).copy())
                torch.testing.assert_close(stored, torch.from_numpy(online[name][0]),
                                           rtol=1e-5, atol=1e-5, msg=name)
        assert rows[0]["video_latent_shape"][-2:] == [height // 8, width // 8]
    _, text_encoder = load_encoders(cfg)
    null_text = np.load(f"{shards}/latents/null_text.npy")
    np.testing.assert_allclose(null_text, text_encoder.encode([""]).numpy(), atol=1e-6)
    # a rerun keeps what is complete and rebuilds what is missing
    assert encode_pass(cfg, progress=False)["encoded_this_run"] == 0
    Path(latent_twin(shards, list_shards(shards, LOCAL, "train")[1], 32, 48)).unlink()
    assert encode_pass(cfg, progress=False)["encoded_this_run"] == 4
    manifest = json.loads(Path(f"{shards}/latents/{MANIFEST}").read_text())
    assert manifest["status"] == "complete" and len(manifest["encoders"]["fingerprint"]) == 64
    # other VAE weights (same config) are other encoders: the pass and training refuse them
    other = tmp_path / "other-vae"
    vae = AutoencoderKLCogVideoX.from_pretrained(cfg.encoders.vae)
    with torch.no_grad():
        next(vae.parameters()).mul_(1.01)
    vae.save_pretrained(other)
    with pytest.raises(LatentsError, match="other encoders"):
        encode_pass(load_config(overrides=[*_inputs(tmp_path), *STAGES, "--encoders.vae",
                                           str(other)]), progress=False)
    train = load_config(overrides=[*_inputs(tmp_path), *STAGES, "--encoders.vae", str(other)])
    with pytest.raises(TrainError, match="other encoders"):
        preflight(train)
    # latents missing at a size the run trains at: run the encode pass again
    shutil.rmtree(f"{shards}/latents/32x48")
    with pytest.raises(TrainError, match="no complete latents at 16x32, 32x48"):
        preflight(load_config(overrides=[*_inputs(tmp_path), *STAGES]))


def test_a_run_on_latents_trains_as_one_encoding_online_and_resumes_mid_stage_at_its_row(
        tmp_path, ray_local):
    """The same seeds, shards and encoders: one run encodes online, one reads the
    precomputed latents. That one is stopped at the stage boundary (step 1), then after the
    first step of the two-step stage 2, and run again, its stream cut at the checkpoint's row.
    Before the last run Ray Train's registry is set back to step 1, as a worker group that
    died after uploading step 2's checkpoint but before the controller registered it leaves
    it: the run resumes from the storage's latest complete checkpoint all the same, where its
    stream was cut. Every step's losses agree: the latents are the online encoder's, the
    resumed stream hands each worker the micro-batch it would have had, and the workers draw
    the same noise."""
    inputs = _inputs(tmp_path)
    run = [*inputs, *RUN, *STAGES, "--train.storage_path", str(tmp_path / "runs"),
           "--train.checkpoint_every", "1", "--train.keep_checkpoints", "3",
           "--loop.vid_warmup_steps", "1", "--loop.svimo_warmup", "true"]
    online = fit(load_config(overrides=[*run, "--train.run_name", "latents-online"]))
    encode_pass(load_config(overrides=run), progress=False)
    checked = preflight(load_config(overrides=run))
    assert checked.latents and "precomputed latents" in checked.summary
    registry = tmp_path / "runs" / "latents" / "checkpoint_manager_snapshot.json"
    at_boundary = fit(load_config(overrides=[*run, "--train.run_name", "latents",
                                             "--train.stop_at_step", "1"]))
    assert at_boundary.metrics["step"] == 1 and "checkpoint-00000001" in registry.read_text()
    registered_at_boundary = registry.read_text()
    stopped_cfg = load_config(overrides=[*run, "--train.run_name", "latents",
                                         "--train.stop_at_step", "2"])
    stopped = fit(stopped_cfg)
    assert stopped.metrics["step"] == 2 and stopped.metrics["resumed_from"] == 1
    # stage 2 (32 x 48) resumes at row 1 micro-batch x 2 clips x 2 workers
    assert resume_start(stopped_cfg, 1) == 4 and resume_start(stopped_cfg, 0) == 0
    registry.write_text(registered_at_boundary)
    resumed = fit(load_config(overrides=[*run, "--train.run_name", "latents"]))
    assert resumed.metrics["resumed_from"] == 2 and resumed.metrics["step"] == 3
    expected, got = _losses(online), _losses(resumed)
    assert sorted(expected) == [1, 2, 3] and sorted(got) == [1, 3]  # 2: not registered
    got |= _losses(stopped)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-6), step
