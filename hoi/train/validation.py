"""Validation samples during training: the model sampled on a fixed set of held-out clips
every `train.validate_every` steps, so a user sees it learn without stopping the run.

The driver takes the prompts' T5 features of the first `train.validate_clips` clips of
<train.shards>/val from their precomputed latents, or encodes them with T5 (train workers
hold no T5); every worker reads the same clips. At a
validation step every rank samples them in joint mode (`hoi.train.local.evaluate`, at the
stage's resolution, `train.validate_steps` steps): under ZeRO-3 each forward gathers the
partitions from every rank, so all ranks take part, in the same order. Rank 0 logs the
video PSNR, MPJPE and the rest of `evaluate`'s row as `validation/...` scalars, and the
preview (RGB | its change | motion video | overlay | 3D, four frames) and gallery (last
frames: true | generated | true motion | generated motion over the true frame) as images. The
weights sampled are the training ones (not the EMA).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from hoi.config import Config
from hoi.data.clip import Clip
from hoi.data.shards import load_clips
from hoi.model.encoders import VideoVAE
from hoi.train.local import evaluate

SPLIT = "val"
MODE = "joint"


def validation_clips(cfg: Config) -> list[Clip]:
    """The run's validation clips (FileNotFoundError when <shards>/val has none)."""
    t = cfg.train
    return load_clips(t.shards, SPLIT, cfg.data, cfg.storage, limit=t.validate_clips)


class PromptFeatures:
    """`TextEncoder.encode` for the validation prompts and the empty one, from features the
    driver computed, in the networks' dtype."""

    def __init__(self, prompts: list[str], features: np.ndarray, null_text: torch.Tensor):
        self.index = {prompt: i for i, prompt in enumerate([*prompts, ""])}
        # torch.tensor copies: Ray hands the driver's arrays over read-only
        self.features = torch.cat([torch.tensor(features), null_text.cpu().float()])
        self.dtype = torch.float32

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.features[[self.index[p] for p in prompts]].to(self.dtype)


class Validation:
    """One worker's validation: the clips, their prompts' features, and the sampling."""

    def __init__(self, cfg: Config, prompts: list[str], features: np.ndarray,
                 null_text: torch.Tensor):
        self.cfg, self.clips = cfg, validation_clips(cfg)
        if [c.prompt for c in self.clips] != prompts:
            raise RuntimeError("this worker read other validation clips than the driver")
        self.text = PromptFeatures(prompts, features, null_text)

    def __call__(self, system: torch.nn.Module, vae: VideoVAE, stage_cfg: Config, rank: int
                 ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Every rank calls this (collective under ZeRO-3); returns the metrics and, on rank
        0, the pictures ({name: (H, W, 3) uint8})."""
        self.text.dtype = next(system.svimo.parameters()).dtype  # bf16 under bf16
        system.eval()
        try:
            with tempfile.TemporaryDirectory(prefix="svimo-validation-") as out:
                row = evaluate(stage_cfg, system.svimo, system.vid, vae, self.text, self.clips,
                               seed=self.cfg.train.seed, num_steps=self.cfg.train.validate_steps,
                               out_dir=out if rank == 0 else None, modes=(MODE,))[MODE]
                pictures = {} if rank else {
                    name: iio.imread(Path(out) / f"{MODE}{suffix}.png")
                    for name, suffix in (("preview", ""), ("gallery", "-gallery"))}
        finally:
            system.train()
        return row, pictures
