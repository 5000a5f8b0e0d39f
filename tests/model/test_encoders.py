"""hoi.model.encoders: VAE wrapper layouts and scaling, loading (local, s3, missing), T5."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from hoi.codec.job import save_pretrained
from hoi.codec.text import build_text_encoder, build_tokenizer, prompt_vocabulary
from hoi.config import ConfigError, StorageConfig, load_config
from hoi.model.encoders import (
    LATENT_STATS,
    TextEncoder,
    VideoVAE,
    from_vae_output,
    load_encoders,
    to_vae_input,
)

LOCAL = StorageConfig()
SCALE = 0.7
CFG = load_config(flavour="svimo-tiny")
N, H, W = CFG.data.num_frames, CFG.data.height, CFG.data.width
F, h, w = CFG.latent_shape


def tiny_vae() -> AutoencoderKLCogVideoX:
    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=CFG.latent.channels, layers_per_block=1,
        norm_num_groups=2, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, temporal_compression_ratio=4,
        scaling_factor=SCALE)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions run far faster on one thread when other processes share the two
    cores (OpenMP workers spin-wait for a busy core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    return VideoVAE(tiny_vae())


@pytest.fixture(scope="module")
def saved_vae(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("vae") / "vae")
    save_pretrained(tiny_vae(), path, LOCAL)
    return path


def video(batch: int = 2, frames: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, H, W, 3), generator=g, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# Layouts and the VAE wrapper
# ---------------------------------------------------------------------------------------------


def test_pixel_layout_round_trip():
    v = video()
    x = to_vae_input(v)
    assert x.shape == (2, 3, N, H, W) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # channel c of frame n at (i, j) is the video's pixel, rescaled
    assert x[1, 2, 3, 4, 5] == v[1, 3, 4, 5, 2].float() / 127.5 - 1
    assert torch.equal(from_vae_output(x), v)
    assert torch.equal(from_vae_output(torch.full((1, 3, 1, 2, 2), 5.0)),
                       torch.full((1, 1, 2, 2, 3), 255, dtype=torch.uint8))  # clamped


def test_pixel_layout_rejects_float_or_channels_first():
    with pytest.raises(ValueError, match="uint8"):
        to_vae_input(video().float())
    with pytest.raises(ValueError, match="uint8"):
        to_vae_input(video().permute(0, 4, 1, 2, 3))


def test_encode_is_scaled_mode_in_frames_first_layout(vae):
    v = video()
    latents = vae.encode(v)
    assert latents.shape == (2, F, CFG.latent.channels, h, w)
    with torch.no_grad():
        mode = vae.vae.encode(to_vae_input(v)).latent_dist.mode()  # (B, C, F, h, w)
    torch.testing.assert_close(latents, mode.permute(0, 2, 1, 3, 4) * SCALE)
    assert not latents.requires_grad


def test_decode_divides_by_the_scaling_factor(vae):
    latents = torch.randn(2, F, CFG.latent.channels, h, w, generator=torch.Generator().manual_seed(1))
    out = vae.decode(latents)
    assert out.shape == (2, N, H, W, 3) and out.dtype == torch.uint8
    with torch.no_grad():
        raw = vae.vae.decode(latents.permute(0, 2, 1, 3, 4) / SCALE).sample
    assert torch.equal(out, from_vae_output(raw))


def test_generator_samples_the_posterior_reproducibly(vae):
    v = video(batch=1)
    a = vae.encode(v, generator=torch.Generator().manual_seed(3))
    b = vae.encode(v, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, vae.encode(v))


def test_encode_image_without_noise_is_a_one_frame_video(vae):
    v = video()
    image_latents = vae.encode_image(v[:, 0], noise_sigma=torch.zeros(2))
    assert image_latents.shape == (2, 1, CFG.latent.channels, h, w)
    torch.testing.assert_close(image_latents, vae.encode(v[:, :1]))


def test_encode_image_noise_is_per_sample_and_seeded(vae):
    image = video()[:, 0]

    def noisy(*sigma: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        return vae.encode_image(image, torch.tensor(sigma), generator=gen)

    a, again, quiet = noisy(0.0, 0.5), noisy(0.0, 0.5), noisy(0.0, 0.0)
    assert torch.equal(a, again)
    # same draws, so sample 0 (sigma 0 in both) is unchanged and only sample 1 sees the noise
    assert torch.equal(a[0], quiet[0]) and (a[1] - quiet[1]).abs().mean() > 1e-2
    with pytest.raises(ValueError, match="generator"):
        vae.encode_image(image, torch.tensor([0.0, 0.5]))


def channel_stats(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = CFG.latent.channels
    return torch.randn(c, generator=g), 0.5 + torch.rand(c, generator=g)


STATS = {"video": channel_stats(1), "motion": channel_stats(2)}


def test_statistics_standardise_each_stream_channel_by_channel():
    standardised = VideoVAE(tiny_vae(), STATS)
    v = video()
    with torch.no_grad():
        mode = standardised.vae.encode(to_vae_input(v)).latent_dist.mode()  # (B, C, F, h, w)
    latents = torch.randn(2, F, CFG.latent.channels, h, w, generator=torch.Generator().manual_seed(1))
    for stream, (mean, std) in STATS.items():
        shape = (1, -1, 1, 1, 1)
        torch.testing.assert_close(standardised.encode(v, stream=stream),
                                   ((mode - mean.view(shape)) / std.view(shape)).permute(0, 2, 1, 3, 4))
        with torch.no_grad():
            raw = standardised.vae.decode(latents.permute(0, 2, 1, 3, 4) * std.view(shape)
                                          + mean.view(shape)).sample
        assert (standardised.decode(latents, stream=stream).int() - from_vae_output(raw).int()
                ).abs().max() <= 1  # rounding to uint8 of the same floats up to their last bit
    # the reference image is a video's first frame
    torch.testing.assert_close(standardised.encode_image(v[:, 0], noise_sigma=torch.zeros(2)),
                               standardised.encode(v[:, :1]))
    # a stream it has no statistics for is named, with or without statistics
    for wrapper in (standardised, VideoVAE(tiny_vae())):
        with pytest.raises(ValueError, match="stream"):
            wrapper.encode(v, stream="depth")


def test_statistics_must_fit_the_latent_channels():
    c = CFG.latent.channels
    for bad in ({"video": STATS["video"]},  # a stream missing
                {**STATS, "motion": (torch.zeros(c + 1), torch.ones(c + 1))},
                {**STATS, "motion": (torch.zeros(c), torch.zeros(c))}):  # std 0
        with pytest.raises((ValueError, KeyError)):
            VideoVAE(tiny_vae(), bad)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_load_from_local_dir_with_slicing_and_tiling(vae, saved_vae):
    loaded = VideoVAE.load(saved_vae, LOCAL, slicing=True, tiling=True)
    assert loaded.vae.use_slicing and loaded.vae.use_tiling and loaded.scaling_factor == SCALE
    assert not any(p.requires_grad for p in loaded.vae.parameters())
    v = video()
    torch.testing.assert_close(loaded.encode(v), vae.encode(v))
    plain = VideoVAE.load(saved_vae, LOCAL, slicing=False, tiling=False, dtype=torch.float64)
    assert not plain.vae.use_slicing and plain.dtype == torch.float64


def test_statistics_are_saved_with_the_vae_and_loaded(s3, tmp_path):
    root = s3.fresh_root()
    save_pretrained(VideoVAE(tiny_vae(), STATS), f"{root}/vae", s3.storage)
    loaded = VideoVAE.load(f"{root}/vae", s3.storage, slicing=False, tiling=False)
    for stream, (mean, std) in STATS.items():
        assert torch.equal(loaded.stats[stream][0], mean) and torch.equal(loaded.stats[stream][1], std)
    v = video(batch=1)
    torch.testing.assert_close(loaded.encode(v, stream="motion"),
                               VideoVAE(tiny_vae(), STATS).encode(v, stream="motion"))
    # a statistics file without a stream is named
    local = tmp_path / "vae"
    save_pretrained(tiny_vae(), str(local), LOCAL)
    (local / LATENT_STATS).write_text('{"video": {"mean": [0], "std": [1]}}')
    with pytest.raises(ValueError, match=LATENT_STATS):
        VideoVAE.load(str(local), LOCAL, slicing=False, tiling=False)


def test_load_from_s3(s3, vae):
    root = s3.fresh_root()
    save_pretrained(vae.vae, f"{root}/vae", s3.storage)
    loaded = VideoVAE.load(f"{root}/vae", s3.storage, slicing=False, tiling=False)
    v = video(batch=1)
    torch.testing.assert_close(loaded.encode(v), vae.encode(v))


def test_missing_paths_are_named(s3, tmp_path):
    for path, storage in ((str(tmp_path / "nowhere"), LOCAL),
                          (f"{s3.fresh_root()}/nowhere", s3.storage)):
        with pytest.raises(FileNotFoundError, match="nowhere"):
            VideoVAE.load(path, storage, slicing=False, tiling=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoVAE.load(str(tmp_path / "empty"), LOCAL, slicing=False, tiling=False)


# ---------------------------------------------------------------------------------------------
# Text encoder and load_encoders
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("text")
    tokenizer = build_tokenizer(prompt_vocabulary(), CFG.model.max_text_tokens)
    torch.manual_seed(0)
    save_pretrained(tokenizer, str(root / "tokenizer"), LOCAL)
    save_pretrained(build_text_encoder(CFG, len(tokenizer)), str(root / "text_encoder"), LOCAL)
    return str(root / "text_encoder"), str(root / "tokenizer")


def test_text_encoder_pads_and_separates_prompts(text_dirs):
    text = TextEncoder.load(*text_dirs, LOCAL, max_tokens=CFG.model.max_text_tokens)
    prompts = ["stir the bowl with the spoon", "cut the bread with the knife",
               "stir the bowl with the spoon", "stir " * 20]
    emb = text.encode(prompts)
    assert emb.shape == (4, CFG.model.max_text_tokens, CFG.model.text_embed_dim)
    torch.testing.assert_close(emb[0], emb[2])
    assert (emb[0] - emb[1]).abs().max() > 1e-2
    # padding and truncation both give exactly max_tokens ids, the last one EOS when truncated
    ids = text.tokenizer(prompts, padding="max_length", max_length=text.max_tokens,
                         truncation=True).input_ids
    assert ids[0][6:] == [1, 0] and ids[3][-1] == 1
    # no attention mask, as in CogVideoX: pad positions carry features too
    assert emb[0, -1].abs().max() > 1e-2


def test_load_encoders_checks_paths_and_sizes(saved_vae, text_dirs):
    with pytest.raises(ConfigError, match="train_codec.py"):
        load_encoders(CFG)
    text_encoder, tokenizer = text_dirs
    paths = ["--encoders.vae", saved_vae, "--encoders.text_encoder", text_encoder,
             "--encoders.tokenizer", tokenizer]
    vae, text = load_encoders(load_config(flavour="svimo-tiny", overrides=paths))
    assert vae.latent_channels == CFG.latent.channels and text.embed_dim == 32
    assert vae.vae.use_slicing  # encoders.vae_slicing defaults to true
    wrong = load_config(flavour="svimo-tiny", overrides=[*paths, "--model.text_embed_dim", "64"])
    with pytest.raises(ConfigError, match="text width 32"):
        load_encoders(wrong)
