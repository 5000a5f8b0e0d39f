"""hoi.codec and jobs/train_codec.py: a few steps on tiny clips, saved, loaded back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from hoi.codec import CodecError
from hoi.codec.job import PREVIEW_NAME, SUMMARY_NAME, read_split
from hoi.codec.text import build_tokenizer, prompt_vocabulary
from hoi.codec.vae import autocast_dtype, build_vae, random_batch, train_vae
from hoi.config import ConfigError, StorageConfig, load_config
from hoi.data.clip import Clip
from hoi.data.schema import clip_to_row
from hoi.data.shards import shard_path, write_shard
from hoi.model.encoders import load_encoders
from hoi.vocabulary import ACTIONS, prompt_for
from jobs.train_codec import main
from tests.conftest import make_clip

LOCAL = StorageConfig()


def codec_overrides(shards: Path, output: Path) -> list[str]:
    return ["--flavour", "svimo-tiny", "--codec.shards", str(shards), "--codec.output", str(output),
            "--codec.vae_channels", "[8, 8, 8, 8]", "--codec.frame_steps", "6",
            "--codec.frame_batch_size", "4", "--codec.steps", "6",
            "--codec.batch_size", "2", "--codec.learning_rate", "3.0e-3"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions run far faster on one thread when other processes share the two
    cores (OpenMP workers spin-wait for a busy core: the job below took 25 CPU-s on two
    threads under load, 2 CPU-s on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def learnable(clip: Clip, rng: np.random.Generator) -> Clip:
    """The clip with videos a few VAE steps visibly learn: a horizontal colour ramp, and the
    motion video thresholded to black and white (the random 8x8 blocks of `make_clip` take
    hundreds of steps)."""
    colour = rng.integers(0, 256, 3)
    ramp = np.linspace(0.2, 1.0, clip.video.shape[2])[None, None, :, None]
    clip.video = np.broadcast_to(colour * ramp, clip.video.shape).astype(np.uint8).copy()
    clip.motion_video = (clip.motion_video > 200).astype(np.uint8) * 255
    return clip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """The job run once on 4 training and 2 validation clips (9 x 32 x 48); one prompt per
    split uses a word that no synthetic prompt has."""
    root = tmp_path_factory.mktemp("codec")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        clips = [learnable(make_clip(f"{split}-{i}", rng, split), rng) for i in range(n)]
        clips[0].prompt = "squeeze the lemon"
        write_shard([clip_to_row(c) for c in clips], shard_path(str(root / "shards"), split, 0),
                    LOCAL)
    overrides = codec_overrides(root / "shards", root / "codec")
    assert main(overrides) == 0
    return load_config(overrides=overrides), json.loads((root / "codec" / SUMMARY_NAME).read_text())


def test_job_writes_three_dirs_and_a_summary(trained):
    cfg, summary = trained
    out = Path(cfg.codec.output)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [SUMMARY_NAME, PREVIEW_NAME, "text_encoder", "tokenizer", "vae"])
    # two validation clips: a row each of truth | reconstruction for RGB and motion video
    picture = iio.imread(out / PREVIEW_NAME)
    assert picture.shape == (2 * 32, 4 * 48, 3) and picture.dtype == np.uint8
    truth = picture[:32, :48]
    assert truth.std() > 0 and not np.array_equal(truth, picture[:32, 48:96])
    assert summary["clips"] == {"train": 4, "val": 2} and summary["evaluated_on"] == "val"
    assert set(summary["psnr_db"]) == {"video", "motion_video"}
    # the round-tripped motion videos against the motions they were drawn from
    consistency = summary["motion_video_consistency"]
    assert consistency["clips"] == 2 and 0 <= consistency["hit_rate"] <= 1
    assert consistency["hit_rate_se"] >= 0 and consistency["pixel_error_px"] >= 0
    assert all(5 < v < 60 for v in summary["psnr_db"].values())
    assert summary["settings"]["vae_channels"] == [8, 8, 8, 8]
    # training lowered the reconstruction error, on the validation clips
    assert summary["mse"]["after"] < summary["mse"]["before"]


def test_saved_codec_loads_through_load_encoders(trained):
    job_cfg, summary = trained
    paths = summary["paths"]
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--encoders.vae", paths["vae"], "--encoders.tokenizer", paths["tokenizer"],
        "--encoders.text_encoder", paths["text_encoder"]])
    vae, text = load_encoders(cfg)
    assert vae.scaling_factor == pytest.approx(summary["scaling_factor"])
    # the scaling factor gives the training latents (posterior modes) unit std
    train = read_split(job_cfg.codec.shards, "train", cfg)
    latents = vae.encode(train.both)
    assert latents.shape == (8, *cfg.latent_shape[:1], cfg.latent.channels, *cfg.latent_shape[1:])
    assert latents.std().item() == pytest.approx(1.0, rel=1e-3)
    # the new word got its own id: the two prompts differ in features
    emb = text.encode(["squeeze the lemon", "stir the lemon", "squeeze the lemon"])
    assert emb.shape == (3, cfg.model.max_text_tokens, cfg.model.text_embed_dim)
    assert torch.equal(emb[0], emb[2]) and (emb[0] - emb[1]).abs().max() > 1e-2


def test_random_batches_of_clips_and_of_frames():
    videos = torch.arange(3 * 5, dtype=torch.uint8).reshape(3, 5, 1, 1, 1).expand(3, 5, 2, 4, 3)
    generator = torch.Generator().manual_seed(0)
    clips = random_batch(videos, 4, generator)
    frames = random_batch(videos, 6, generator, frames=True)
    assert clips.shape == (4, 3, 5, 2, 4) and frames.shape == (6, 3, 1, 2, 4)
    # each frame comes whole from one clip and frame index; whole clips keep their frame order
    values = (frames[:, 0, 0] + 1) * 127.5
    assert torch.allclose(values, values[..., :1].expand_as(values))
    assert (clips[:, 0, 1:, 0, 0] > clips[:, 0, :-1, 0, 0]).all()


def test_vocabulary_covers_every_synthetic_prompt():
    vocabulary = prompt_vocabulary(["Squeeze the lemon!"])
    tokenizer = build_tokenizer(vocabulary, 16)
    unk = tokenizer.unk_token_id
    synthetic = [prompt_for(a, target, tool) for a, (tools, targets) in ACTIONS.items()
                 for tool in tools for target in targets]
    assert set(synthetic) <= set(vocabulary)
    ids = tokenizer(synthetic + ["squeeze THE lemon", "juggle the lemon"], padding="max_length",
                    max_length=16, truncation=True).input_ids
    assert all(unk not in row for row in ids[:-1])  # case-insensitive, punctuation split off
    assert ids[-1][0] == unk and ids[-1][3] == tokenizer.eos_token_id


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["--codec.stpes", "3"]) == 2
    assert "codec.steps" in capsys.readouterr().err  # the nearest valid key is suggested
    assert main(["--codec.shards", str(tmp_path / "none"), "--codec.output",
                 str(tmp_path / "out")]) == 1
    assert "no training clips" in capsys.readouterr().err


def test_vae_blocks_must_match_the_latent_compression():
    cfg = load_config(flavour="svimo-tiny", overrides=["--codec.vae_channels", "[8, 8, 8]"])
    with pytest.raises(ConfigError, match="spatial compression 4 != latent.spatial_compression 8"):
        build_vae(cfg)


def test_a_diverging_vae_stops_with_the_step_not_a_nan_codec():
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--codec.vae_channels", "[8, 8, 8, 8]", "--codec.frame_steps", "20",
        "--codec.frame_batch_size", "2", "--codec.learning_rate", "1.0e+6"])
    vae = build_vae(cfg)
    videos = torch.randint(0, 256, (2, 9, 32, 48, 3), dtype=torch.uint8)
    with pytest.raises(CodecError, match=r"codec vae frames: the loss is (nan|inf) at step \d+"):
        train_vae(vae, videos, cfg, progress=False)
    assert autocast_dtype(torch.device("cpu")) is None  # bf16 on CPUs gave NaN (see there)
