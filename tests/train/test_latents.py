"""Precomputed latents: the encode pass writes what the online stream would encode, resumes,
refuses other encoders. That a run on them trains as a run that encodes online does, and
resumes mid-stage from the checkpoint's row, is tests/train/test_train_job.py's resume test."""

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
from hoi.train.data import Encoder
from hoi.train.job import TrainError, preflight
from hoi.train.latents import MANIFEST, LatentsError, encode_pass
from tests.train.inputs import write_train_inputs, write_val_clips

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
