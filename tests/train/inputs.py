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
    _write_clips(f"{root}/shards", "train", TRAIN_CLIPS, 2, storage)
    return ["--flavour", "svimo-tiny", "--train.shards", f"{root}/shards",
            *write_untrained_codec(f"{root}/codec", storage)]


def write_val_clips(shards: str, storage: StorageConfig, count: int = 2) -> None:
    """A val split of `count` rendered svimo-tiny clips under shard root `shards`."""
    _write_clips(shards, "val", count, 1, storage)


def _write_clips(shards: str, split: str, count: int, files: int, storage: StorageConfig
                 ) -> None:
    """`count` rendered svimo-tiny clips (seeds 0, 1, ...) of `split`, in `files` shards."""
    cfg = load_config(flavour="svimo-tiny")
    made = [generate_clip(seed, cfg.data, split, f"{split}-{seed}") for seed in range(count)]
    clips = [clip for clip, _ in made]
    render_synthetic(clips, [look for _, look in made], cfg.data)
    per_file = -(-count // files)
    for index in range(files):
        part = clips[index * per_file:(index + 1) * per_file]
        write_shard([clip_to_row(c) for c in part], shard_path(shards, split, index), storage)
