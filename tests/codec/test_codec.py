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
from hoi.codec.job import PREVIEW_NAME, SUMMARY_NAME, asset_misfit, read_split
from hoi.codec.text import build_tokenizer, prompt_vocabulary
from hoi.codec.vae import autocast_dtype, build_vae, random_batch, train_vae, vae_loss
from hoi.config import ConfigError, StorageConfig, load_config
from hoi.data.clip import Clip
from hoi.data.schema import clip_to_row
from hoi.data.shards import shard_path, write_shard
from hoi.model.encoders import VideoVAE, load_encoders
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
    # each stream's training latents (posterior modes) are standardised channel by channel
    # with that stream's statistics, saved with the VAE
    train = read_split(job_cfg.codec.shards, "train", cfg)
    for stream, videos in (("video", train.video), ("motion", train.motion_video)):
        latents = vae.encode(videos, stream=stream)
        assert latents.shape == (4, *cfg.latent_shape[:1], cfg.latent.channels,
                                 *cfg.latent_shape[1:])
        channels = latents.transpose(0, 2).flatten(1)
        assert channels.mean(1).abs().max().item() < 1e-4
        assert torch.allclose(channels.std(1), torch.ones(cfg.latent.channels), atol=1e-4)
    # without them (diffusers' own pipelines), the scaling factor gives them unit std
    scaled = VideoVAE(vae.vae).encode(train.both)
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-3)
    # the new word got its own id: the two prompts differ in features
    emb = text.encode(["squeeze the lemon", "stir the lemon", "squeeze the lemon"])
    assert emb.shape == (3, cfg.model.max_text_tokens, cfg.model.text_embed_dim)
    assert torch.equal(emb[0], emb[2]) and (emb[0] - emb[1]).abs().max() > 1e-2


def test_a_fitting_asset_is_installed_instead_of_trained(trained, tmp_path):
    asset_cfg, asset = trained
    out = tmp_path / "codec"
    overrides = [*codec_overrides(Path(asset_cfg.codec.shards), out),
                 "--codec.asset", asset_cfg.codec.output]
    assert main(overrides) == 0
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["installed_from"] == asset_cfg.codec.output
    assert summary["paths"] == {name: str(out / name)
                                for name in ("vae", "tokenizer", "text_encoder")}
    # the asset's record, not a new training's: its measured figures and its seconds
    for key in ("psnr_db", "motion_video_consistency", "scaling_factor", "seconds", "mse"):
        assert summary[key] == asset[key]
    source = Path(asset_cfg.codec.output)
    copied = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert all((out / name).read_bytes() == (source / name).read_bytes()
               for name in copied if name.name != SUMMARY_NAME)
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--encoders.vae", summary["paths"]["vae"], "--encoders.tokenizer",
        summary["paths"]["tokenizer"], "--encoders.text_encoder", summary["paths"]["text_encoder"]])
    vae, _ = load_encoders(cfg)
    assert vae.scaling_factor == pytest.approx(asset["scaling_factor"])


def test_an_asset_that_does_not_fit_is_named_and_a_codec_trained(trained, tmp_path, caplog):
    asset_cfg, _ = trained
    shards, asset = Path(asset_cfg.codec.shards), asset_cfg.codec.output
    base = [*codec_overrides(shards, tmp_path / "codec"), "--codec.asset", asset]
    misfit = lambda *extra: asset_misfit(load_config(overrides=[*base, *extra]))  # noqa: E731
    assert misfit() is None
    assert "latent" in misfit("--latent.spatial_compression", "4",
                              "--codec.vae_channels", "[8, 8, 8]")
    assert "frame size [32, 48] (config: [64, 48])" in misfit("--data.height", "64")
    assert "text width" in misfit("--model.text_embed_dim", "64")
    assert "no codec.json" in misfit("--codec.asset", str(tmp_path / "none"))
    # shards with a word the asset's tokenizer never saw
    clip = make_clip("val-0", np.random.default_rng(1), "val")
    clip.prompt = "juggle the lemon"
    write_shard([clip_to_row(clip)], shard_path(str(tmp_path / "other"), "val", 0), LOCAL)
    assert "'juggle the lemon'" in misfit("--codec.shards", str(tmp_path / "other"))
    # the job then trains its own codec, and says why
    with caplog.at_level("WARNING", logger="hoi.codec.job"):
        assert main([*base, "--model.text_embed_dim", "64"]) == 0
    assert "codec.asset not used" in caplog.text and "text width" in caplog.text
    summary = json.loads((tmp_path / "codec" / SUMMARY_NAME).read_text())
    assert "installed_from" not in summary and summary["settings"]["text_embed_dim"] == 64


def test_the_shipped_codec_fits_the_main_jobs_config(tmp_path):
    """assets/codec-small, which configs/default.yaml installs, fits that config and loads; a
    change of svimo-small's sizes that it no longer fits fails here, not in a user's job."""
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs/default.yaml", overrides=[
        "--codec.asset", str(repo / "assets/codec-small"),
        "--codec.shards", str(tmp_path / "no-shards")])
    assert asset_misfit(cfg) is None
    asset = Path(cfg.codec.asset)
    summary = json.loads((asset / SUMMARY_NAME).read_text())
    assert summary["clips"]["val"] >= 16 and summary["motion_video_consistency"]["clips"] >= 16
    loaded = load_config(repo / "configs/default.yaml", overrides=[
        "--encoders.vae", str(asset / "vae"), "--encoders.tokenizer", str(asset / "tokenizer"),
        "--encoders.text_encoder", str(asset / "text_encoder")])
    vae, text = load_encoders(loaded)
    assert vae.scaling_factor == pytest.approx(summary["scaling_factor"])
    assert vae.stats is not None  # each stream's latents standardised, as the job saves them
    assert text.encode(["stir the bowl with the spoon"]).shape == (1, 16, 64)


def test_the_loss_weighs_foreground_pixels_and_keeps_all_foreground_samples_plain():
    cfg = load_config(flavour="svimo-tiny", overrides=["--codec.vae_channels", "[8, 8, 8, 8]"])
    torch.manual_seed(0)
    vae = build_vae(cfg)
    black = torch.full((1, 3, 1, 32, 48), -1.0)
    skeleton = black.clone()
    skeleton[..., 10:13, 20:23] = 0.8  # a 3 x 3 px joint on the black canvas
    bright = torch.rand(1, 3, 1, 32, 48) * 1.6 - 0.6  # every pixel above the threshold

    def loss(pixels, weight):
        value, mse = vae_loss(vae, pixels, 0.0, torch.Generator().manual_seed(1), weight)
        return value.item(), mse.item()

    # a frame that is all foreground keeps its plain MSE, whatever the weight
    assert loss(bright, 10.0)[0] == pytest.approx(loss(bright, 0.0)[1], rel=1e-5)
    assert loss(bright, 0.0)[0] == pytest.approx(loss(bright, 0.0)[1], rel=1e-5)
    # on a skeleton frame the 9 foreground pixels weigh 11 times the 1,527 black ones
    plain, mse = loss(skeleton, 0.0)
    weighted, _ = loss(skeleton, 10.0)
    assert plain == pytest.approx(mse, rel=1e-5)
    recon = vae.decode(vae.encode(skeleton).latent_dist.sample(
        torch.Generator().manual_seed(1))).sample.detach()
    error = (recon - skeleton).pow(2).mean(1)[0, 0]  # (H, W), mean over colours
    fg = torch.zeros_like(error, dtype=torch.bool)
    fg[10:13, 20:23] = True
    assert weighted == pytest.approx(((error[~fg].sum() + 11 * error[fg].sum())
                                      / (error[~fg].numel() + 11 * 9)).item(), rel=1e-4)


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
