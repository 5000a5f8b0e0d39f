"""What the DiT is conditioned on, built the same way in training and sampling.

- the reference-image latent on every latent frame (paper) or on the first only (CogVideoX);
- condition dropout for classifier-free guidance (text -> the empty prompt's features, image
  latent -> zeros, together);
- the interaction guidance z~_0^M: a 3D motion estimate rendered by `Proj` in its camera and
  encoded by the frozen VAE (paper equation 7, first row);
- the training batch: clips as read from shards -> latents, text features, normalised motion.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from hoi.config import Config
from hoi.geometry.motion import denormalize, normalize, pack, to_camera, unpack
from hoi.render.motion_video import render_motion_video

if TYPE_CHECKING:  # diffusers and transformers: not for the data processes that only batch
    from hoi.model.encoders import TextEncoder, VideoVAE


def image_condition(image_latent: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """(B, 1, C, h, w) -> (B, F, C, h, w): repeated ("repeat") or first frame + zeros."""
    if mode == "repeat":
        return image_latent.expand(-1, frames, -1, -1, -1)
    padding = image_latent.new_zeros(image_latent.shape[0], frames - 1, *image_latent.shape[2:])
    return torch.cat([image_latent, padding], dim=1)


def drop_conditions(text: torch.Tensor, image_latent: torch.Tensor, null_text: torch.Tensor,
                    probability: float, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, with `probability`, replace the text by the empty prompt's features
    (1, L, D) and the image latent by zeros: the unconditional model that classifier-free
    guidance extrapolates from."""
    keep = torch.rand(text.shape[0], generator=generator, device=text.device) >= probability
    keep = keep.to(text.device)
    text = torch.where(keep[:, None, None], text, null_text.to(text.dtype))
    image_latent = image_latent * keep[:, None, None, None, None].to(image_latent.dtype)
    return text, image_latent


def image_noise_sigma(cfg: Config, batch: int, generator: torch.Generator | None = None,
                      training: bool = True) -> torch.Tensor:
    """(B,) sigma of the noise added to the reference image: log-normal in training, its
    median exp(mean) at sampling (CogVideoX I2V's augmentation)."""
    mean, std = cfg.diffusion.image_noise_log_sigma
    if not training:
        return torch.full((batch,), math.exp(mean))
    device = generator.device if generator is not None else None
    return (torch.randn(batch, generator=generator, device=device) * std + mean).exp()


def render_guidance(motion: torch.Tensor, K: torch.Tensor, vae: VideoVAE, cfg: Config
                    ) -> torch.Tensor:
    """`Proj` + VAE: a normalised camera-frame motion (B, N, 340, 3) -> the latent of its
    rendered motion video (B, F, C, h, w) in the VAE's dtype (the latents'), drawn with
    intrinsics K (B, 3, 3)."""
    joints, points = unpack(denormalize(motion.float(), cfg.vid.coord_center,
                                        cfg.vid.coord_scale))
    B = motion.shape[0]
    R = torch.eye(3, device=motion.device).expand(B, 3, 3)
    T = torch.zeros(B, 3, device=motion.device)
    frames = render_motion_video(joints, points, K.to(motion.device).float(), R, T,
                                 cfg.data.height, cfg.data.width)
    return vae.encode(frames, stream="motion")


FLOAT32_FIELDS = ("motion", "K")
"""TrainBatch fields kept in float32 whatever the networks compute in."""


@dataclass
class TrainBatch:
    """One encoded training batch (algorithm 1, lines 3-4).

    video_latent, motion_latent: (B, F, C, h, w) z_0^V and z_0^M (of the rendered motion video);
    image_latent: (B, 1, C, h, w) z_I of the noised first frame; text: (B, L, D) features;
    motion: (B, N, 340, 3) normalised camera-frame joints + points; K: (B, 3, 3).
    """

    video_latent: torch.Tensor
    motion_latent: torch.Tensor
    image_latent: torch.Tensor
    text: torch.Tensor
    motion: torch.Tensor
    K: torch.Tensor

    def __len__(self) -> int:
        return self.video_latent.shape[0]

    def select(self, index: torch.Tensor | slice) -> TrainBatch:
        """The clips at `index` (a (B',) long tensor or a slice)."""
        return TrainBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> TrainBatch:
        """The latents and text features to `dtype` (the networks' precision), all to
        `device`. The 3D motion and K stay float32: in bf16 the motion's normalised units
        are about a millimetre apart, the size of its velocity and acceleration terms, which
        its targets, noise and losses need finer."""
        moved = {}
        for f in fields(self):
            x = getattr(self, f.name)
            moved[f.name] = x.to(device=device,
                                 dtype=None if f.name in FLOAT32_FIELDS else dtype)
        return TrainBatch(**moved)


def clip_generator(device: torch.device, clip_id: str) -> torch.Generator:
    """The generator of a clip's reference-image noise augmentation, seeded by the clip (a
    stable hash, unlike Python's salted one): the clip's latents are the same whether they
    were precomputed once or encoded in the training pipeline, in any batch."""
    return torch.Generator(device).manual_seed(zlib.crc32(clip_id.encode()))


@torch.no_grad()
def encode_clips(clips: dict, vae: VideoVAE, text_encoder: TextEncoder, cfg: Config
                 ) -> TrainBatch:
    """Clips as `ClipCollate` gives them (video, motion_video uint8 (B, N, H, W, 3); joints,
    points world-frame; K, R, T; prompt and clip_id lists) -> a TrainBatch on the VAE's
    device. Each clip's reference image gets its own noise augmentation (`clip_generator`)."""
    device = vae.device
    video = clips["video"].to(device)
    images = []
    for i, clip_id in enumerate(clips["clip_id"]):
        generator = clip_generator(device, str(clip_id))
        sigma = image_noise_sigma(cfg, 1, generator)
        images.append(vae.encode_image(video[i:i + 1, 0], sigma.to(device), generator=generator))
    motion = pack(clips["joints"].float(), clips["points"].float())
    motion = normalize(to_camera(motion, clips["R"].float(), clips["T"].float()),
                       cfg.vid.coord_center, cfg.vid.coord_scale)
    return TrainBatch(
        video_latent=vae.encode(video),
        motion_latent=vae.encode(clips["motion_video"].to(device), stream="motion"),
        image_latent=torch.cat(images),
        text=text_encoder.encode(list(clips["prompt"])).to(device),
        motion=motion.to(device),
        K=clips["K"].float().to(device),
    )
