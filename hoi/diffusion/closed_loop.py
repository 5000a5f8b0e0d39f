"""The closed-loop training objective of SViMo and VID (paper section 3.5, algorithm 1).

    (z_t^V, z_t^M, P) --VID no-grad--> (h~0, o~0) --Proj--> M~ --VAE--> z~_0^M   (guidance)
    SViMo(z_t^V + z_I, z_t^M + z~_0^M, P, t) -> (x0^V, x0^M)
    VID((h_t, o_t), (x0^V, x0^M, P), t) -> (h0, o0)   with gradient into SViMo (constraint)
    L = w1 L_SViMo + w2 L_VID

Variants (the paper's ablations, `loop.variant`):
- "full": both pathways;
- "guidance_only": VID's guidance feeds SViMo, but VID learns from the noisy latents
  (z_t^V, z_t^M) and its loss never reaches SViMo;
- "gradient_only": no guidance (zeros in the slot); VID reads SViMo's x0 predictions;
- "no_vid": SViMo alone with an empty guidance slot;
- "video_model" / "motion_model": the separate models of "VModel w/ Pred. Mot.": video loss
  only with the ground-truth motion latent as guidance (the motion stream held to it, as
  motion_to_video sampling does), and motion loss only with pure noise in the video stream
  (the reference image still reaches it through the video tokens' channel concatenation).
VID reads SViMo's predictions only in "full" and "gradient_only"; elsewhere it learns in the
warm-up alone (and in "guidance_only" from the noisy latents), and at sampling it lifts the
final latents to the 3D motion.
The warm-up phase trains VID alone on the latents noised to the motion's t (its equation 6
as written) or, for a `loop.vid_warmup_clean` share of the clips, on the clean latents that
SViMo's x0 predictions stand for in the joint phase. With `loop.svimo_warmup`, SViMo's video
stream learns in the same steps as the video model does (video loss, the true motion latent
in the guidance slot): the pre-training that a model built from scratch lacks.
"""

from __future__ import annotations

from typing import Literal

import torch

from hoi.config import Config
from hoi.diffusion.conditions import (
    TrainBatch,
    drop_conditions,
    image_condition,
    render_guidance,
)
from hoi.diffusion.losses import svimo_loss, vid_loss
from hoi.diffusion.schedule import Schedule
from hoi.model.encoders import VideoVAE
from hoi.model.svimo import SViMo
from hoi.model.vid import VID

Phase = Literal["warmup", "joint"]


class ClosedLoop:
    """Owns the noise math of one training step; the networks only `forward`."""

    def __init__(self, cfg: Config, svimo: SViMo, vid: VID, vae: VideoVAE,
                 null_text: torch.Tensor, schedule: Schedule | None = None):
        """null_text: (1, L, D) features of the empty prompt (condition dropout)."""
        self.cfg, self.svimo, self.vid, self.vae = cfg, svimo, vid, vae
        self.null_text = null_text
        self.schedule = schedule or Schedule(cfg.diffusion)

    def phase(self, step: int) -> Phase:
        """The warm-up for `loop.vid_warmup_steps` steps, then the joint phase."""
        return "warmup" if step < self.cfg.loop.vid_warmup_steps else "joint"

    def losses(self, batch: TrainBatch, generator: torch.Generator, phase: Phase = "joint"
               ) -> dict[str, torch.Tensor]:
        """Every loss term of one step; "total" is the one to back-propagate.

        `generator` (on the batch's device) draws t, the three noises and condition dropout.
        """
        cfg, loop, schedule = self.cfg, self.cfg.loop, self.schedule
        # 1. t and the diffused data (equation 1), one t per clip for all three variables.
        B = batch.video_latent.shape[0]
        device = batch.video_latent.device
        t = schedule.sample_timesteps(B, generator, device)
        noise = {name: _randn_like(x, generator) for name, x in
                 (("video", batch.video_latent), ("motion_latent", batch.motion_latent),
                  ("motion", batch.motion))}
        z_v = schedule.add_noise(batch.video_latent, noise["video"], t)
        z_m = schedule.add_noise(batch.motion_latent, noise["motion_latent"], t)
        motion_t = schedule.add_noise(batch.motion, noise["motion"], t)

        if phase == "warmup":
            clean = torch.rand(B, generator=generator, device=generator.device).to(device) \
                < loop.vid_warmup_clean
            z_v_vid, z_m_vid = (torch.where(clean[:, None, None, None, None], x0, x_t)
                                for x0, x_t in ((batch.video_latent, z_v),
                                                (batch.motion_latent, z_m)))
            estimate = self.vid(motion_t, z_v_vid, z_m_vid, t, batch.text)
            terms = _prefixed(vid_loss(estimate, batch.motion), "vid")
            terms["total"] = terms["vid"]
            if loop.svimo_warmup:  # the video loss alone: the motion stream's is not trained
                video = self._svimo_terms(batch, z_v, z_m, t, batch.motion_latent,
                                          generator)[0]["svimo_video"]
                terms["svimo_video"] = video
                terms["total"] = terms["total"] + loop.svimo_weight * video
            return terms

        # 2. Interaction guidance: VID without gradient -> Proj -> VAE (algorithm 1, line 8-9).
        vid_on_noisy = None
        if loop.variant == "guidance_only":
            # VID learns from the noisy latents; its (detached) estimate is also the guidance
            vid_on_noisy = self.vid(motion_t, z_v, z_m, t, batch.text)
            guidance = render_guidance(vid_on_noisy.detach(), batch.K, self.vae, cfg)
        elif loop.variant == "full":
            with torch.no_grad():
                guidance = render_guidance(self.vid(motion_t, z_v, z_m, t, batch.text), batch.K,
                                           self.vae, cfg)
        elif loop.variant == "video_model":
            guidance = batch.motion_latent
        else:
            guidance = torch.zeros_like(z_m)
        if loop.variant == "motion_model":
            z_v = noise["video"]

        # 3. SViMo on (z_t^V + z_I, z_t^M + z~_0^M, P, t), conditions dropped for CFG.
        terms, x0_v, x0_m = self._svimo_terms(batch, z_v, z_m, t, guidance, generator)
        trained = {"video_model": "svimo_video", "motion_model": "svimo_motion"}
        total = loop.svimo_weight * terms[trained.get(loop.variant, "svimo")]

        # 4. VID's loss: through SViMo's x0 predictions (gradient constraint) or not at all.
        if loop.variant in ("full", "gradient_only"):
            vid_motion = self.vid(motion_t, x0_v, x0_m, t, batch.text)
        else:
            vid_motion = vid_on_noisy
        if vid_motion is not None:
            terms |= _prefixed(vid_loss(vid_motion, batch.motion), "vid")
            total = total + loop.vid_weight * terms["vid"]
        terms["total"] = total
        return terms

    def _svimo_terms(self, batch: TrainBatch, z_v: torch.Tensor, z_m: torch.Tensor,
                     t: torch.Tensor, guidance: torch.Tensor, generator: torch.Generator
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """SViMo's loss terms (equation 5) and x0 estimates of both latents, with text and
        image dropped together for classifier-free guidance."""
        cfg = self.cfg
        text, image = drop_conditions(batch.text, batch.image_latent, self.null_text,
                                      cfg.diffusion.condition_dropout, generator)
        image = image_condition(image, z_v.shape[1], cfg.diffusion.image_latent)
        pred_v, pred_m = self.svimo(z_v, image, text, t, z_m, guidance)
        x0_v = self.schedule.x0_from(pred_v, z_v, t, cfg.diffusion.prediction)
        x0_m = self.schedule.x0_from(pred_m, z_m, t, cfg.diffusion.prediction)
        terms = _prefixed(svimo_loss(x0_v, batch.video_latent, x0_m, batch.motion_latent),
                          "svimo")
        return terms, x0_v, x0_m


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=generator.device).to(x)


def _prefixed(terms: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """{'total': a, 'video': b} -> {'svimo': a, 'svimo_video': b}."""
    return {(name if k == "total" else f"{name}_{k}"): v for k, v in terms.items()}
