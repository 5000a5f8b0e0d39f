"""The codec's VAE: CogVideoX's architecture at small widths, its loss and its training."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from diffusers import AutoencoderKLCogVideoX
from tqdm.auto import tqdm

from hoi.codec import CodecError
from hoi.config import Config, ConfigError
from hoi.metrics.video import psnr_db
from hoi.model.encoders import VideoVAE, to_vae_input

_EVAL_BATCH = 4
"""Clips per forward pass when encoding for the latent statistics and the evaluation."""


def build_vae(cfg: Config) -> AutoencoderKLCogVideoX:
    """A randomly initialised AutoencoderKLCogVideoX with cfg.latent's compression.

    One down/up block per entry of codec.vae_channels; each block but the last halves H and W,
    the first log2(temporal_compression) also compress time (diffusers' rule)."""
    channels = cfg.codec.vae_channels
    spatial = 2 ** (len(channels) - 1)
    if spatial != cfg.latent.spatial_compression:
        raise ConfigError(f"codec.vae_channels has {len(channels)} blocks: spatial compression "
                          f"{spatial} != latent.spatial_compression "
                          f"{cfg.latent.spatial_compression}")
    return AutoencoderKLCogVideoX(
        block_out_channels=channels, latent_channels=cfg.latent.channels,
        down_block_types=("CogVideoXDownBlock3D",) * len(channels),
        up_block_types=("CogVideoXUpBlock3D",) * len(channels),
        layers_per_block=1, norm_num_groups=_norm_groups(channels),
        # sample_height/width stay diffusers' 480 x 720: they set the tile size when tiling is
        # enabled, and tiles of half our small frames break diffusers' tile blending.
        temporal_compression_ratio=cfg.latent.temporal_compression)


def _norm_groups(channels: Iterable[int]) -> int:
    """GroupNorm groups: the most that divide every block width with >= 8 channels each."""
    width = math.gcd(*channels)
    return max(g for g in range(1, width + 1) if width % g == 0 and width // g >= min(8, width))


FOREGROUND_LEVEL = 24
"""A pixel is foreground, for `vae_loss`'s weights, when a channel exceeds this (of 255): the
motion video's black canvas is background, every drawn bone, joint and point foreground."""


def vae_loss(vae: AutoencoderKLCogVideoX, pixels: torch.Tensor, kl_weight: float,
             generator: torch.Generator, foreground_weight: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels float (B, 3, N, H, W) in [-1, 1] -> (loss, MSE).

    Weighted MSE reconstruction of a posterior sample plus kl_weight x the KL to N(0, I). Each
    pixel weighs 1 + foreground_weight when it is foreground (`FOREGROUND_LEVEL`), 1 else, and
    each sample's error is its weighted mean: an RGB frame, all foreground, keeps its plain
    MSE, while a motion video's skeleton, 6 % of its pixels, stops being outweighed by the
    black around it. MSE rather than L1: L1's optimum for the motion videos is an all-black
    frame, where training stalled (PSNR 14.9 dB, exactly black's). The networks may run under
    bf16 autocast; the loss is computed in float32. The returned MSE is the plain one (what
    PSNR measures)."""
    posterior = vae.encode(pixels).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample.float()
    mean, var, logvar = (t.float() for t in (posterior.mean, posterior.var, posterior.logvar))
    error = (recon - pixels).pow(2)
    foreground = pixels.amax(dim=1, keepdim=True) > FOREGROUND_LEVEL / 127.5 - 1.0
    weight = 1.0 + foreground_weight * foreground.float()
    weighted = (error * weight).flatten(1).sum(1) / (weight.flatten(1).sum(1) * pixels.shape[1])
    kl = 0.5 * (mean.pow(2) + var - 1.0 - logvar).mean()
    return weighted.mean() + kl_weight * kl, error.mean()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where CUDA computes it natively, else None. Not on CPUs, even those with
    native bf16: with torch 2.13 on an Intel Xeon with AMX, bf16 autocast turned the default
    codec's VAE weights to NaN at its second step (fp32 on the same batches learns)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def random_batch(videos: torch.Tensor, batch_size: int, generator: torch.Generator, *,
                 frames: bool = False) -> torch.Tensor:
    """uint8 (M, N, H, W, 3) -> float (B, 3, N, H, W): random clips, or with `frames` random
    single frames of random clips (B, 3, 1, H, W); each mirrored left-right with probability
    1/2 (the only augmentation: a codec must not care about handedness)."""
    index = torch.randint(len(videos), (batch_size,), generator=generator)
    if frames:
        frame = torch.randint(videos.shape[1], (batch_size,), generator=generator)
        batch = videos[index, frame][:, None]
    else:
        batch = videos[index]
    flip = torch.rand(batch_size, generator=generator) < 0.5
    batch[flip] = batch[flip].flip(3)
    return to_vae_input(batch)


def train_vae(vae: AutoencoderKLCogVideoX, videos: torch.Tensor, cfg: Config, *,
              progress: bool = True) -> list[float]:
    """AdamW on random batches of `videos` uint8 (M, N, H, W, 3): codec.frame_steps steps on
    single frames, then codec.steps steps on whole clips, each phase with its own cosine
    learning-rate decay (the last steps at a small rate settle the reconstruction). Returns the
    MSE of every step."""
    codec = cfg.codec
    generator = torch.Generator().manual_seed(codec.seed)
    device = next(vae.parameters()).device
    dtype = autocast_dtype(device)
    vae.train().requires_grad_(True)
    history = []
    phases = [("codec vae frames", codec.frame_steps, codec.frame_batch_size, True),
              ("codec vae clips", codec.steps, codec.batch_size, False)]
    for desc, steps, batch_size, frames in phases:
        if not steps:
            continue
        optimizer = torch.optim.AdamW(vae.parameters(), lr=codec.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=codec.learning_rate * 0.05)
        bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
        for _ in bar:
            pixels = random_batch(videos, batch_size, generator, frames=frames).to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                loss, mse = vae_loss(vae, pixels, codec.kl_weight, generator,
                                     codec.foreground_weight)
            if not torch.isfinite(loss):
                raise CodecError(f"{desc}: the loss is {loss.item()} at step {len(history) + 1}; "
                                 f"lower codec.learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(mse.item())
            bar.set_postfix(psnr=f"{psnr_db(mse.detach().double(), 2.0).item():.1f}dB")
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def latent_std(vae: AutoencoderKLCogVideoX, videos: torch.Tensor) -> float:
    """Std of the unscaled posterior modes of `videos` uint8 (M, N, H, W, 3)."""
    modes = [vae.encode(to_vae_input(chunk)).latent_dist.mode()
             for chunk in videos.split(_EVAL_BATCH)]
    return torch.cat(modes).float().std().item()


@torch.no_grad()
def latent_moments(vae: AutoencoderKLCogVideoX, videos: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C,) of the unscaled posterior modes of `videos` uint8
    (M, N, H, W, 3), in float32."""
    modes = torch.cat([vae.encode(to_vae_input(chunk)).latent_dist.mode()
                       for chunk in videos.split(_EVAL_BATCH)]).float()  # (M, C, F, h, w)
    channels = modes.transpose(0, 1).flatten(1)
    return channels.mean(1), channels.std(1)


@torch.no_grad()
def reconstruction(vae: VideoVAE, videos: torch.Tensor) -> dict[str, float]:
    """Through the wrapper (posterior mode, uint8 out) for `videos` uint8 (M, N, H, W, 3):
    mean per-clip PSNR (dB) and the MSE in [-1, 1] units (the training loss's)."""
    mses = torch.cat([(vae.decode(vae.encode(chunk)).float() - chunk.float()).pow(2).flatten(1)
                      .mean(1) for chunk in videos.split(_EVAL_BATCH)])
    return {"psnr_db": psnr_db(mses.double()).mean().item(), "mse": mses.mean().item() / 127.5**2}
