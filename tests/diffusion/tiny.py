"""Tiny real components for the closed-loop tests: SViMo, VID, a (random) CogVideoX VAE, a
word-level tokenizer + small T5, and rendered synthetic clips."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hoi.codec.text import build_text_encoder, build_tokenizer, prompt_vocabulary
from hoi.codec.vae import build_vae
from hoi.config import Config
from hoi.data.prepare import render_synthetic
from hoi.data.shards import collate_clips
from hoi.data.synthetic import generate_clip
from hoi.diffusion.conditions import TrainBatch, encode_clips
from hoi.model.encoders import TextEncoder, VideoVAE
from hoi.model.svimo import SViMo
from hoi.model.vid import VID


@dataclass
class Parts:
    cfg: Config
    svimo: SViMo
    vid: VID
    vae: VideoVAE
    text_encoder: TextEncoder

    @property
    def null_text(self) -> torch.Tensor:
        return self.text_encoder.encode([""])


def build_parts(cfg: Config, seed: int = 0, perturb: float = 0.0) -> Parts:
    """Seeded components; `perturb` > 0 adds noise to every SViMo weight so that its
    zero-initialised gates and heads do not hide the couplings a test looks for."""
    torch.manual_seed(seed)
    svimo = SViMo(cfg)
    if perturb:
        with torch.no_grad():
            for p in svimo.parameters():
                p.add_(torch.randn_like(p) * perturb)
    tokenizer = build_tokenizer(prompt_vocabulary(), cfg.model.max_text_tokens)
    text = TextEncoder(build_text_encoder(cfg, len(tokenizer)), tokenizer,
                       cfg.model.max_text_tokens)
    return Parts(cfg, svimo, VID(cfg), VideoVAE(build_vae(cfg)), text)


def clip_batch(parts: Parts, seeds: list[int]) -> TrainBatch:
    """Rendered synthetic clips, encoded as a training batch."""
    made = [generate_clip(s, parts.cfg.data) for s in seeds]
    clips = [c for c, _ in made]
    render_synthetic(clips, [look for _, look in made], parts.cfg.data)
    return encode_clips(collate_clips(clips), parts.vae, parts.text_encoder, parts.cfg)
