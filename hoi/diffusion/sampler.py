"""Closed-loop sampling of video latent, motion latent and 3D motion (paper algorithm 2).

At every step: VID (no gradient) on the current noisy state -> Proj -> VAE gives the
interaction guidance; SViMo predicts both latents' x0; VID on those predictions gives the
motion's x0; one DDPM (equation 3) or DDIM step moves all three to t - 1.

Modes:
- "joint": everything generated (default);
- "motion_to_video": a given 3D motion (InterDyn / ManiVideo style) or a given rendered motion
  video fills the guidance slot, and the motion stream is held to it;
- "video_to_motion": a given video latent is held fixed and the loop recovers the 3D motion;
- "video_only": the motion stream and VID are dropped; exact only for a model trained with
  the asymmetric motion mask (`model.motion_attention_mask`), CoInteract's fast mode.
A "held" variable is replaced at every step by its known x0 (and its x_t by the forward
process of that x0), so the other variables are denoised against it.

A model samples the way its `loop.variant` trained it: VID's guidance only where it was
trained with it (zeros otherwise), a video model ("video_model") only from a given motion,
and a motion model ("motion_model") with its video stream left at the initial noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from hoi.config import MODE_NAMES, Config
from hoi.diffusion.conditions import image_condition, render_guidance
from hoi.diffusion.schedule import Schedule, step
from hoi.geometry.motion import NUM_ENTITIES
from hoi.model.encoders import VideoVAE
from hoi.model.svimo import SViMo
from hoi.model.vid import VID

Mode = Literal["joint", "motion_to_video", "video_to_motion", "video_only"]
MODES = MODE_NAMES  # the config validates sample.mode against the same names
GUIDED_VARIANTS = ("full", "guidance_only")
"""Variants trained with VID's interaction guidance in the slot (the others saw zeros)."""
Progress = Callable[[int, int], None]


@dataclass
class Sample:
    """video_latent (B, F, C, h, w); motion_latent (same) or None in video-only mode;
    motion (B, N, 340, 3) normalised camera-frame joints + points, or None."""

    video_latent: torch.Tensor
    motion_latent: torch.Tensor | None
    motion: torch.Tensor | None


class Sampler:
    """Algorithm 2 over one SViMo, one VID and the frozen VAE."""

    def __init__(self, cfg: Config, svimo: SViMo, vid: VID, vae: VideoVAE,
                 schedule: Schedule | None = None):
        self.cfg, self.svimo, self.vid, self.vae = cfg, svimo, vid, vae
        self.schedule = schedule or Schedule(cfg.diffusion)

    @torch.no_grad()
    def __call__(self, image_latent: torch.Tensor, text: torch.Tensor, K: torch.Tensor, *,
                 generator: torch.Generator, mode: Mode = "joint",
                 null_text: torch.Tensor | None = None, guidance_scale: float | None = None,
                 num_steps: int | None = None, sampler: str | None = None,
                 motion: torch.Tensor | None = None, motion_latent: torch.Tensor | None = None,
                 video_latent: torch.Tensor | None = None,
                 progress: Progress | None = None) -> Sample:
        """Generate one sample per batch item.

        Args:
            image_latent: (B, 1, C, h, w) reference-image latent z_I.
            text: (B, L, D) prompt features; null_text (1, L, D) the empty prompt's, needed
                when guidance_scale > 1 (classifier-free guidance on text and image).
            K: (B, 3, 3) intrinsics that Proj renders motion with.
            generator: on the model's device; seeds the initial noise and DDPM's steps.
            mode: see the module docstring. "motion_to_video" needs `motion` (B, N, 340, 3)
                or `motion_latent` (B, F, C, h, w, e.g. of a given motion video);
                "video_to_motion" needs `video_latent` (B, F, C, h, w).
            progress: called as progress(step_index, num_steps) after every step.
        """
        # 1. What is given, per mode.
        cfg = self.cfg
        scale = cfg.diffusion.guidance_scale if guidance_scale is None else guidance_scale
        if scale > 1 and null_text is None:
            raise ValueError("classifier-free guidance (guidance_scale > 1) needs null_text")
        variant = self.svimo.config.loop.variant
        known_motion, known_m_lat, known_v_lat = _given(mode, motion, motion_latent,
                                                        video_latent, self.svimo.config)
        if known_motion is not None:  # the 3D motion in float32 (see TrainBatch.to)
            known_motion = known_motion.float()
        if known_motion is not None and known_m_lat is None:
            known_m_lat = render_guidance(known_motion, K, self.vae, cfg)

        # 2. Start from Gaussian noise (algorithm 2, line 4).
        B = image_latent.shape[0]
        F, h, w = cfg.latent_shape
        dtype, device = image_latent.dtype, image_latent.device
        lat_shape = (B, F, cfg.latent.channels, h, w)
        z_v = torch.randn(lat_shape, generator=generator, device=device).to(dtype)
        z_m = torch.randn(lat_shape, generator=generator, device=device).to(dtype)
        # the 3D motion in float32 whatever the networks compute in (see TrainBatch.to)
        x_h = torch.randn((B, cfg.data.num_frames, NUM_ENTITIES, 3), generator=generator,
                          device=device)
        image = image_condition(image_latent, F, cfg.diffusion.image_latent)
        scheduler = self.schedule.sampling_scheduler(sampler, num_steps)
        timesteps = scheduler.timesteps

        # 3. The loop.
        for i, t_scalar in enumerate(timesteps):
            t = torch.full((B,), int(t_scalar), device=device, dtype=torch.long)
            z_v = self._hold(z_v, known_v_lat, t, generator)
            z_m = self._hold(z_m, known_m_lat, t, generator)
            x_h = self._hold(x_h, known_motion, t, generator)
            if mode == "video_only":
                x0_v, _ = self._svimo(z_v, image, text, t, None, None, scale, null_text)
                z_v = step(scheduler, x0_v, t_scalar, z_v, generator)
                _report(progress, i, len(timesteps))
                continue
            # 3a. interaction guidance: the given motion, or VID -> Proj -> VAE
            if known_m_lat is not None:
                guidance = known_m_lat
            elif variant in GUIDED_VARIANTS:
                guidance = render_guidance(self.vid(x_h, z_v, z_m, t, text), K, self.vae, cfg)
            else:
                guidance = torch.zeros_like(z_m)
            # 3b. SViMo, then VID on its predictions
            x0_v, x0_m = self._svimo(z_v, image, text, t, z_m, guidance, scale, null_text)
            x0_v = known_v_lat if known_v_lat is not None else x0_v
            x0_m = known_m_lat if known_m_lat is not None else x0_m
            x0_h = known_motion if known_motion is not None else self.vid(x_h, x0_v, x0_m, t, text)
            # 3c. one posterior step for all three (equation 3 / DDIM)
            if variant != "motion_model":
                z_v = step(scheduler, x0_v, t_scalar, z_v, generator)
            z_m = step(scheduler, x0_m, t_scalar, z_m, generator)
            x_h = step(scheduler, x0_h, t_scalar, x_h, generator)
            _report(progress, i, len(timesteps))

        # 4. Given variables come back exactly as given.
        if mode == "video_only":
            return Sample(video_latent=z_v, motion_latent=None, motion=None)
        return Sample(video_latent=known_v_lat if known_v_lat is not None else z_v,
                      motion_latent=known_m_lat if known_m_lat is not None else z_m,
                      motion=known_motion if known_motion is not None else x_h)

    def _svimo(self, z_v: torch.Tensor, image: torch.Tensor, text: torch.Tensor,
               t: torch.Tensor, z_m: torch.Tensor | None, guidance: torch.Tensor | None,
               scale: float, null_text: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x0 estimates of both latents, with classifier-free guidance when scale > 1 (the
        conditional and unconditional passes share one batch)."""
        parameterisation = self.cfg.diffusion.prediction
        if scale <= 1:
            pred_v, pred_m = self.svimo(z_v, image, text, t, z_m, guidance)
        else:
            two = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
            uncond_text = null_text.to(text.dtype).expand_as(text)
            pred_v, pred_m = self.svimo(two(z_v), torch.cat([image, torch.zeros_like(image)]),
                                        torch.cat([text, uncond_text]), two(t), two(z_m),
                                        two(guidance))
            pred_v = _cfg(pred_v, scale)
            pred_m = None if pred_m is None else _cfg(pred_m, scale)
        x0_v = self.schedule.x0_from(pred_v, z_v, t, parameterisation)
        x0_m = None if pred_m is None else self.schedule.x0_from(pred_m, z_m, t,
                                                                  parameterisation)
        return x0_v, x0_m

    def _hold(self, x_t: torch.Tensor, known: torch.Tensor | None, t: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
        """A given variable's x_t drawn from the forward process of its known x0."""
        if known is None:
            return x_t
        noise = torch.randn(known.shape, generator=generator, device=known.device)
        return self.schedule.add_noise(known, noise.to(known.dtype), t)


def _cfg(pred: torch.Tensor, scale: float) -> torch.Tensor:
    cond, uncond = pred.chunk(2)
    return uncond + scale * (cond - uncond)


def _given(mode: str, motion: torch.Tensor | None, motion_latent: torch.Tensor | None,
           video_latent: torch.Tensor | None, model_cfg: Config
           ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(known motion, known motion latent, known video latent) for `mode`, checked against
    the config the DiT was built (and trained) with."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if mode == "video_only" and not model_cfg.model.motion_attention_mask:
        raise ValueError("mode 'video_only' drops the motion stream, which only a model "
                         "trained with model.motion_attention_mask=true allows")
    if mode not in supported_modes(model_cfg):
        raise ValueError(f"mode {mode!r} is not one of this model's "
                         f"{list(supported_modes(model_cfg))} (loop.variant "
                         f"{model_cfg.loop.variant!r})")
    if mode == "motion_to_video":
        if motion is None and motion_latent is None:
            raise ValueError("mode 'motion_to_video' needs a motion or a motion_latent")
        return motion, motion_latent, None
    if mode == "video_to_motion":
        if video_latent is None:
            raise ValueError("mode 'video_to_motion' needs a video_latent")
        return None, None, video_latent
    return None, None, None


def supported_modes(cfg: Config) -> tuple[str, ...]:
    """The modes a model trained with `cfg` samples in: all, but video_only only with the
    asymmetric motion mask; a video model only from a given motion, a motion model only
    jointly."""
    if cfg.loop.variant == "video_model":
        return ("motion_to_video",)
    if cfg.loop.variant == "motion_model":
        return ("joint",)
    masked = cfg.model.motion_attention_mask
    return tuple(m for m in MODE_NAMES if m != "video_only" or masked)


def _report(progress: Progress | None, i: int, total: int) -> None:
    if progress is not None:
        progress(i + 1, total)
