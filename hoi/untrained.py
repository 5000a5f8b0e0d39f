"""Untrained models written as training would leave them: a seeded random codec (VAE,
tokenizer, T5) and an exported SViMo + VID with random weights. What a model costs to load,
sample and serve does not depend on its weights, so benchmarks measure with these, and tests
sample from them without training first."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hoi.artifacts import export_networks
from hoi.codec.job import save_pretrained as save_codec_part
from hoi.codec.text import build_text_encoder, build_tokenizer, prompt_vocabulary
from hoi.codec.vae import build_vae
from hoi.config import StorageConfig, load_config
from hoi.model.svimo import SViMo
from hoi.model.vid import VID


def write_untrained_codec(root: str, storage: StorageConfig) -> list[str]:
    """A seeded random svimo-tiny codec (VAE, tokenizer, T5) under `root`; returns the
    config overrides that point at it."""
    cfg = load_config(flavour="svimo-tiny", overrides=["--codec.vae_channels", "[8, 8, 8, 8]"])
    torch.manual_seed(0)
    tokenizer = build_tokenizer(prompt_vocabulary(), cfg.model.max_text_tokens)
    save_codec_part(build_vae(cfg), f"{root}/vae", storage)
    save_codec_part(tokenizer, f"{root}/tokenizer", storage)
    save_codec_part(build_text_encoder(cfg, len(tokenizer)), f"{root}/text_encoder", storage)
    return ["--encoders.vae", f"{root}/vae", "--encoders.tokenizer", f"{root}/tokenizer",
            "--encoders.text_encoder", f"{root}/text_encoder"]


def write_untrained_model(root: str, storage: StorageConfig, overrides: Sequence[str] = ()
                          ) -> str:
    """An exported svimo-tiny model (random weights, as a training checkpoint's model/
    directory) and its codec under `root`; returns the model directory. `overrides` change
    the model's config (e.g. --model.motion_attention_mask true)."""
    cfg = load_config(flavour="svimo-tiny",
                      overrides=[*write_untrained_codec(f"{root}/codec", storage), *overrides])
    torch.manual_seed(0)
    export_networks(f"{root}/model", SViMo(cfg), VID(cfg), cfg, step=0, storage=storage)
    return f"{root}/model"
