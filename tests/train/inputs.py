"""Inputs of a training run that tests build themselves: shards of rendered svimo-tiny clips
and an untrained codec (`hoi.untrained`)."""

from __future__ import annotations

from hoi.config import StorageConfig, load_config
from hoi.data.prepare import render_synthetic
from hoi.data.schema import clip_to_row
from hoi.data.shards import shard_path, write_shard
from hoi.data.synthetic import generate_clip
from hoi.untrained import write_untrained_codec

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
            *write_untrained_codec(f"{root}/codec", storage)]


def write_val_clips(shards: str, storage: StorageConfig, count: int = 2) -> None:
    """A val split of `count` rendered svimo-tiny clips under shard root `shards`."""
    cfg = load_config(flavour="svimo-tiny")
    made = [generate_clip(seed, cfg.data, "val", f"val-{seed}") for seed in range(count)]
    clips = [clip for clip, _ in made]
    render_synthetic(clips, [look for _, look in made], cfg.data)
    write_shard([clip_to_row(c) for c in clips], shard_path(shards, "val", 0), storage)
