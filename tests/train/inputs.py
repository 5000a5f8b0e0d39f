"""Inputs of a training run that tests build themselves: shards of rendered svimo-tiny clips
and a tiny random codec (VAE, tokenizer, T5); and an exported tiny model to sample from."""

from __future__ import annotations

import torch

from hoi.config import StorageConfig, load_config
from hoi.data.prepare import render_synthetic
from hoi.data.schema import clip_to_row
from hoi.data.shards import shard_path, write_shard
from hoi.data.synthetic import generate_clip
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.train.checkpoint import export
from hoi.train.codec import build_text_encoder, build_tokenizer, build_vae, prompt_vocabulary
from hoi.train.codec import save_pretrained as save_codec_part

TRAIN_CLIPS = 8


def write_train_inputs(root: str, storage: StorageConfig) -> list[str]:
    """Shards of TRAIN_CLIPS rendered svimo-tiny clips (two files) and a tiny random codec
    under `root`; returns the config overrides that point at them."""
    cfg = load_config(flavour="svimo-tiny")
    made = [generate_clip(seed, cfg.data, "train", f"train-{seed}") for seed in range(TRAIN_CLIPS)]
    clips = [clip for clip, _ in made]
    render_synthetic(clips, [look for _, look in made], cfg.data)
    half = TRAIN_CLIPS // 2
    for index, part in enumerate((clips[:half], clips[half:])):
        write_shard([clip_to_row(c) for c in part], shard_path(f"{root}/shards", "train", index),
                    storage)
    return ["--flavour", "svimo-tiny", "--train.shards", f"{root}/shards",
            *write_tiny_codec(f"{root}/codec", storage)]


def write_tiny_codec(root: str, storage: StorageConfig) -> list[str]:
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


def write_tiny_model(root: str, storage: StorageConfig, overrides: list[str] = ()) -> str:
    """An exported svimo-tiny model (random weights, as a training checkpoint's model/
    directory) and its codec under `root`; returns the model directory. `overrides` change
    the model's config (e.g. --model.motion_attention_mask true)."""
    cfg = load_config(flavour="svimo-tiny",
                      overrides=[*write_tiny_codec(f"{root}/codec", storage), *overrides])
    torch.manual_seed(0)
    state = {**{f"svimo.{k}": v for k, v in SViMo(cfg).state_dict().items()},
             **{f"vid.{k}": v for k, v in VID(cfg).state_dict().items()}}
    export(f"{root}/model", state, cfg, step=0, storage=storage)
    return f"{root}/model"
