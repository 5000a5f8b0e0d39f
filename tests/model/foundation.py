"""A tiny CogVideoX-I2V transformer checkpoint in diffusers' layout, random in every weight,
whose sizes are svimo-tiny's with `TINY_I2V`: a foundation to load SViMo from in tests."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import CogVideoXTransformer3DModel

# latents 3 x 4 x 6 -> tokens 3 x 2 x 3: the tiny flavour's own sizes
FOUNDATION = dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, in_channels=32,
                  out_channels=16, time_embed_dim=32, text_embed_dim=32, sample_frames=9,
                  sample_height=4, sample_width=6, patch_size=2, temporal_compression_ratio=4,
                  max_text_seq_length=8, use_rotary_positional_embeddings=True,
                  use_learned_positional_embeddings=True)
TINY_I2V = ["--model.learned_positional_embedding", "true", "--model.rope_base_grid", "[2, 3]"]
"""svimo-tiny overrides that fit FOUNDATION."""


def write_foundation(path: str | Path) -> CogVideoXTransformer3DModel:
    """Save a seeded random FOUNDATION transformer at `path`; returns it (eval mode)."""
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**FOUNDATION).eval()
    with torch.no_grad():  # random everything, including diffusers' zero-initialised parts
        for p in model.parameters():
            p.normal_(0, 0.2)
        model.patch_embed.pos_embedding.normal_(0, 0.5)
    model.save_pretrained(path)
    return model
