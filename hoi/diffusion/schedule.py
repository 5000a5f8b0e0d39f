"""The noise schedule shared by the video latent, the motion latent and the 3D motion.

One table of betas (diffusers' ``DDPMScheduler`` built from `DiffusionConfig`; CogVideoX's
convention by default: scaled-linear betas 0.00085..0.012, rescaled to zero terminal SNR,
v-prediction, "trailing" timestep spacing) serves three things:

- training: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (paper equation 1) and the v
  target ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` for any tensor shape (B, ...);
- the x0 space the losses and the sampler work in (SPEC section 3): a v prediction becomes
  ``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v``, which stays finite at zero terminal SNR
  where the epsilon form would divide by sqrt(abar_t) = 0;
- sampling: a diffusers DDPM (paper equation 3) or DDIM scheduler over the same betas, fed x0
  estimates (``prediction_type="sample"``) for every variable, so one scheduler object steps
  the video latent, the motion latent and the 3D motion alike (algorithm 2).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hoi.config import DiffusionConfig

Parameterisation = Literal["v", "x0"]
SamplerKind = Literal["ddim", "ddpm"]
SamplingScheduler = DDIMScheduler | DDPMScheduler


class Schedule:
    """Forward process, parameterisation conversions and sampling schedulers of one config.

    Attributes:
        num_train_timesteps: T.
        betas, alphas_cumprod: (T,) float64 copies of diffusers' float32 tables (the sampling
            schedulers use the float32 originals; both hold the same values).
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.num_train_timesteps = cfg.num_train_timesteps
        table = DDPMScheduler(**self._scheduler_kwargs())
        self.betas = table.betas.double()
        self.alphas_cumprod = table.alphas_cumprod.double()
        # Coefficients in float64, cast to the data's dtype only when used, so that bf16 training
        # does not round abar before the square roots.
        self._sqrt_abar = self.alphas_cumprod.sqrt()
        self._sqrt_one_minus_abar = (1.0 - self.alphas_cumprod).sqrt()
        # each table copied once to each device it is used on: no host-to-device copy per step
        self._on_device: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _scheduler_kwargs(self) -> dict[str, Any]:
        """Arguments shared by every diffusers scheduler built from this config."""
        c = self.cfg
        return dict(
            num_train_timesteps=c.num_train_timesteps,
            beta_schedule=c.beta_schedule,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            rescale_betas_zero_snr=c.zero_terminal_snr,
            # The sampler is always given x0 estimates (SPEC section 3: sampling in x0 space).
            prediction_type="sample",
            # Latents and normalised motion are not confined to [-1, 1] (diffusers' default
            # clip_sample=True would clamp them).
            clip_sample=False,
            timestep_spacing="trailing",
        )

    # --- training ---------------------------------------------------------------------------

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """(B,) long, uniform in [0, T). Drawn on the generator's device, then moved."""
        draw_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_train_timesteps, (batch,), generator=generator,
                          device=draw_device)
        return t.to(device) if device is not None else t

    def _coefficient(self, table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor
                     ) -> torch.Tensor:
        """table[t] shaped to broadcast against `like` (B, ...): (B, 1, ..., 1), or 0-d for a
        scalar t; in like's dtype and on its device (t: a tensor there, or a Python int)."""
        key = (id(table), like.device)
        if key not in self._on_device:
            self._on_device[key] = table.to(like.device)
        c = self._on_device[key][t].to(like.dtype)
        return c.reshape(-1, *([1] * (like.ndim - 1))) if c.ndim == 1 else c

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int
                  ) -> torch.Tensor:
        """Equation 1: x0 (B, ...), noise like x0, t (B,) or scalar -> x_t like x0."""
        return (self._coefficient(self._sqrt_abar, t, x0) * x0
                + self._coefficient(self._sqrt_one_minus_abar, t, x0) * noise)

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int
                 ) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0, like x0 (B, ...)."""
        return (self._coefficient(self._sqrt_abar, t, x0) * noise
                - self._coefficient(self._sqrt_one_minus_abar, t, x0) * x0)

    def x0_from_v(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
                  ) -> torch.Tensor:
        """x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v, like x_t (B, ...); no division."""
        return (self._coefficient(self._sqrt_abar, t, x_t) * x_t
                - self._coefficient(self._sqrt_one_minus_abar, t, x_t) * v)

    def x0_from(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                parameterisation: Parameterisation) -> torch.Tensor:
        """The x0 estimate from a network output of either parameterisation (B, ...)."""
        if parameterisation == "v":
            return self.x0_from_v(prediction, x_t, t)
        if parameterisation == "x0":
            return prediction
        raise ValueError(f"unknown parameterisation {parameterisation!r}; expected 'v' or 'x0'")

    # --- sampling ---------------------------------------------------------------------------

    def sampling_scheduler(self, kind: SamplerKind | None = None, num_steps: int | None = None
                           ) -> SamplingScheduler:
        """A diffusers scheduler over this schedule's betas, timesteps already set.

        Args:
            kind: "ddpm" (equation 3, the posterior q(x_{t-1} | x_t, x0_hat)) or "ddim"
                (deterministic, eta = 0); default cfg.sampler.
            num_steps: sampling steps; default cfg.num_inference_steps.
        """
        kind = kind or self.cfg.sampler
        num_steps = num_steps or self.cfg.num_inference_steps
        if kind == "ddpm":
            scheduler: SamplingScheduler = DDPMScheduler(**self._scheduler_kwargs())
        elif kind == "ddim":
            # set_alpha_to_one: the last step lands on x0_hat itself, as in CogVideoX.
            scheduler = DDIMScheduler(**self._scheduler_kwargs(), set_alpha_to_one=True)
        else:
            raise ValueError(f"unknown sampler {kind!r}; expected 'ddim' or 'ddpm'")
        scheduler.set_timesteps(num_steps)
        return scheduler


def step(scheduler: SamplingScheduler, x0_hat: torch.Tensor, t: torch.Tensor | int,
         x_t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reverse step x_t -> x_{t-1} given the x0 estimate, for any tensor shape.

    The diffusers schedulers' `step` is stateless for DDPM and DDIM (the previous timestep is
    derived from `t`), so one scheduler steps the video latent, the motion latent and the 3D
    motion at the same `t`. DDPM draws its noise from `generator`; DDIM (eta = 0) draws none.
    """
    return scheduler.step(x0_hat, t, x_t, generator=generator).prev_sample


__all__ = ["Parameterisation", "SamplerKind", "SamplingScheduler", "Schedule", "step"]
