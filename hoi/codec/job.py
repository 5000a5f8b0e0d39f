"""The codec job: read the shards' clips, train the VAE, build the text side, measure, save."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from typing import Any

import imageio.v3 as iio
import numpy as np
import pyarrow.parquet as pq
import torch

from hoi.codec import CodecError
from hoi.codec.text import build_text_encoder, build_tokenizer, prompt_vocabulary
from hoi.codec.vae import (
    autocast_dtype,
    build_vae,
    latent_moments,
    latent_std,
    reconstruction,
    train_vae,
)
from hoi.config import Config, StorageConfig
from hoi.data.schema import row_to_clip
from hoi.data.shards import READ_COLUMNS, list_shards
from hoi.metrics.consistency import video_motion_consistency
from hoi.metrics.stats import standard_error
from hoi.model.encoders import VideoVAE, load_tokenizer
from hoi.storage import join, list_files, read_bytes, read_text, resolve, write_bytes, write_text

log = logging.getLogger(__name__)

SUMMARY_NAME = "codec.json"
PREVIEW_NAME = "reconstruction.png"
PREVIEW_CLIPS = 3
"""Clips (rows) of the reconstruction picture."""
_EVAL_CLIPS = 4
"""Clips decoded at a time when measuring."""
_WRITTEN_LAST = ("config.json", "tokenizer_config.json")
"""Files that mark a saved directory as complete: uploaded after everything else."""


def _upload_order(name: str) -> tuple[bool, bool, str]:
    """Sort key of a codec's files: codec.json (a complete codec) last, before it each
    directory's `_WRITTEN_LAST` files (a complete directory)."""
    return name == SUMMARY_NAME, os.path.basename(name) in _WRITTEN_LAST, name


@dataclasses.dataclass
class SplitVideos:
    """One split's clips in memory: video and motion_video uint8 (M, N, H, W, 3), M prompts,
    and what the motion videos were drawn from: joints (M, N, 42, 3), points (M, N, 298, 3),
    the cameras K, R (M, 3, 3) and T (M, 3)."""

    video: torch.Tensor
    motion_video: torch.Tensor
    prompts: list[str]
    joints: torch.Tensor
    points: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    T: torch.Tensor

    @property
    def both(self) -> torch.Tensor:
        """RGB and motion videos together (2M, N, H, W, 3): the VAE codes both kinds."""
        return torch.cat([self.video, self.motion_video])


def _read_rows(root: str, split: str | None, columns: list[str], cfg: Config
               ) -> list[dict[str, Any]]:
    """`columns` of every row of the shards of `split` (all splits: None) under shard root
    `root`; none when there are no shards."""
    try:
        paths = list_shards(root, cfg.storage, split)
    except FileNotFoundError:
        return []
    rows = []
    for path in paths:
        fs, inner = resolve(path, cfg.storage)
        rows += pq.read_table(inner, filesystem=fs, columns=columns).to_pylist()
    return rows


def read_prompts(root: str, cfg: Config) -> list[str]:
    """The prompts of every clip under shard root `root`, all splits."""
    return [row["prompt"] for row in _read_rows(root, None, ["prompt"], cfg)]


def read_split(root: str, split: str, cfg: Config) -> SplitVideos | None:
    """Every clip of `split` under shard root `root` (validated against cfg.data's sizes), or
    None when the split has no shards."""
    clips = [row_to_clip(row, cfg.data.num_frames, cfg.data.height, cfg.data.width)
             for row in _read_rows(root, split, READ_COLUMNS, cfg)]
    if not clips:
        return None
    stack = lambda name: torch.stack([torch.from_numpy(np.array(getattr(c, name)))  # noqa: E731
                                      for c in clips])
    return SplitVideos(stack("video"), stack("motion_video"), [c.prompt for c in clips],
                       *(stack(name) for name in ("joints", "points", "K", "R", "T")))


@torch.no_grad()
def round_trip_consistency(vae: VideoVAE, videos: SplitVideos) -> dict[str, float]:
    """How much of the motion the codec's round trip of the motion videos keeps: the
    video-motion consistency (`hoi.metrics.consistency`) of decode(encode(motion video))
    against the motion it was drawn from (1 and 0 px for the motion video itself). Mean hit
    rate, its standard error over the clips, and the mean pixel error."""
    decoded = torch.cat([vae.decode(vae.encode(chunk, stream="motion"), stream="motion").cpu()
                         for chunk in videos.motion_video.split(_EVAL_CLIPS)])
    result = video_motion_consistency(videos.joints, videos.points, videos.K, videos.R,
                                      videos.T, decoded)
    hits = result.hit_rate[~result.hit_rate.isnan()].double()
    return {"hit_rate": hits.mean().item(),
            "hit_rate_se": standard_error(hits),
            "pixel_error_px": torch.nanmean(result.pixel_error).item(), "clips": len(hits)}


@torch.no_grad()
def reconstruction_picture(vae: VideoVAE, videos: SplitVideos) -> np.ndarray:
    """(rows * H, 4 * W, 3) uint8: for the first PREVIEW_CLIPS clips, the middle frame of the
    RGB video, its reconstruction, the motion video and its reconstruction."""
    columns = []
    for clips in (videos.video[:PREVIEW_CLIPS], videos.motion_video[:PREVIEW_CLIPS]):
        middle = clips.shape[1] // 2
        columns += [clips[:, middle], vae.decode(vae.encode(clips))[:, middle].to(torch.uint8)]
    rows = torch.cat(columns, dim=2)  # (clips, H, 4 W, 3)
    return rows.flatten(0, 1).numpy()


def save_pretrained(obj: Any, path: str, storage: StorageConfig) -> None:
    """`obj.save_pretrained` to a local or s3:// directory, file by file and atomically, the
    config file last so that a directory with a config is complete."""
    with tempfile.TemporaryDirectory(prefix="svimo-codec-") as tmp:
        obj.save_pretrained(tmp)
        names = sorted((os.path.relpath(os.path.join(d, f), tmp) for d, _, files in os.walk(tmp)
                        for f in files), key=_upload_order)
        for name in names:
            with open(os.path.join(tmp, name), "rb") as f:
                write_bytes(join(path, name), f.read(), storage)


def asset_misfit(cfg: Config) -> str | None:
    """Why the trained codec at codec.asset cannot stand in for training one under cfg, or
    None when it can: its codec.json must record this config's frame size, latent and text
    sizes, and its tokenizer must know every word of the shards' prompts."""
    asset = cfg.codec.asset
    try:
        summary = json.loads(read_text(join(asset, SUMMARY_NAME), cfg.storage))
    except FileNotFoundError:
        return f"no {SUMMARY_NAME} under {asset!r}"
    settings = summary["settings"]
    wanted = {"frame size": ([cfg.data.height, cfg.data.width],
                             [settings["data"]["height"], settings["data"]["width"]]),
              "latent": (dataclasses.asdict(cfg.latent), settings["latent"]),
              "text width": (cfg.model.text_embed_dim, settings["text_embed_dim"]),
              "text tokens": (cfg.model.max_text_tokens, settings["max_text_tokens"])}
    wrong = [f"{name} {got} (config: {want})" for name, (want, got) in wanted.items()
             if want != got]
    if wrong:
        return f"{asset!r} was trained for another config: {'; '.join(wrong)}"
    tokenizer = load_tokenizer(join(asset, "tokenizer"), cfg.storage)
    unknown = sorted({prompt for prompt in read_prompts(cfg.codec.shards, cfg)
                      if tokenizer.unk_token_id in tokenizer(prompt).input_ids})
    if unknown:
        return (f"the tokenizer under {asset!r} lacks words of {len(unknown)} of the shards' "
                f"prompts, e.g. {unknown[0]!r}")
    return None


def install_asset(cfg: Config) -> dict[str, Any]:
    """Copy the trained codec at codec.asset to codec.output, its codec.json last (the mark of
    a complete codec), with paths to the copies and where it came from; returns that summary."""
    asset, output = cfg.codec.asset, cfg.codec.output
    names = sorted(list_files(asset, cfg.storage), key=_upload_order)
    for name in names[:-1]:  # codec.json: below, pointing at the copies
        write_bytes(join(output, name), read_bytes(join(asset, name), cfg.storage), cfg.storage)
    summary = json.loads(read_text(join(asset, SUMMARY_NAME), cfg.storage))
    summary["paths"] = {name: join(output, name) for name in ("vae", "tokenizer", "text_encoder")}
    summary["installed_from"] = asset
    text = json.dumps(summary, indent=2)
    write_text(join(output, SUMMARY_NAME), text, cfg.storage)
    return json.loads(text)


def run(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """Train and save the codec, or install the trained one at codec.asset when it fits
    (`asset_misfit`); returns the summary also written to <output>/codec.json.

    1. read the training (and validation) clips; 2. train the VAE; 3. set its scaling factor
    to 1 / std of the training latents, and measure each stream's per-channel latent
    statistics (`hoi.model.encoders.LATENT_STATS`, saved with the VAE); 4. measure
    reconstruction on the validation clips
    (the training clips when there are none): PSNR, and the video-motion consistency of the
    round-tripped motion videos; 5. build the tokenizer and T5; 6. save."""
    start = time.monotonic()
    codec = cfg.codec
    if codec.asset is not None:
        misfit = asset_misfit(cfg)
        if misfit is None:
            log.info("installing the trained codec %s in %s", codec.asset, codec.output)
            return install_asset(cfg)
        log.warning("codec.asset not used, training a codec instead: %s", misfit)
    # 1. Data.
    train = read_split(codec.shards, "train", cfg)
    if train is None:
        raise CodecError(f"no training clips under {codec.shards!r}/train: run jobs/prepare.py "
                         f"first or set codec.shards")
    val = read_split(codec.shards, "val", cfg)
    evaluated = val if val is not None else train
    # 2. VAE, seeded without touching the caller's global RNG.
    with torch.random.fork_rng():
        torch.manual_seed(codec.seed)
        vae = build_vae(cfg)
    before = reconstruction(VideoVAE(vae), evaluated.both)
    history = train_vae(vae, train.both, cfg, progress=progress)
    # 3. Latents of unit variance: CogVideoX's one scaling factor (kept for diffusers' own
    # pipelines), and the per-channel statistics of each stream, which our pipeline uses.
    std = latent_std(vae, train.both)
    vae.register_to_config(scaling_factor=1.0 / std)
    wrapped = VideoVAE(vae, {"video": latent_moments(vae, train.video),
                             "motion": latent_moments(vae, train.motion_video)})
    # 4. Reconstruction quality, RGB and motion video apart.
    after = {name: reconstruction(wrapped, getattr(evaluated, name))
             for name in ("video", "motion_video")}
    consistency = round_trip_consistency(wrapped, evaluated)
    picture = reconstruction_picture(wrapped, evaluated)
    write_bytes(join(codec.output, PREVIEW_NAME),
                iio.imwrite("<bytes>", picture, extension=".png"), cfg.storage)
    # 5. Text.
    vocabulary = prompt_vocabulary(train.prompts + (val.prompts if val is not None else []))
    tokenizer = build_tokenizer(vocabulary, cfg.model.max_text_tokens)
    with torch.random.fork_rng():
        torch.manual_seed(codec.seed)
        text_encoder = build_text_encoder(cfg, len(tokenizer))
    # 6. Save: the three directories, then the summary.
    paths = {name: join(codec.output, name) for name in ("vae", "tokenizer", "text_encoder")}
    save_pretrained(wrapped, paths["vae"], cfg.storage)
    save_pretrained(tokenizer, paths["tokenizer"], cfg.storage)
    save_pretrained(text_encoder, paths["text_encoder"], cfg.storage)
    summary = {
        "paths": paths,
        "settings": {**dataclasses.asdict(codec), "flavour": cfg.flavour,
                     "data": dataclasses.asdict(cfg.data), "latent": dataclasses.asdict(cfg.latent),
                     "text_embed_dim": cfg.model.text_embed_dim,
                     "max_text_tokens": cfg.model.max_text_tokens},
        "clips": {"train": len(train.prompts), "val": len(val.prompts) if val is not None else 0},
        "evaluated_on": "val" if val is not None else "train",
        "psnr_db": {name: m["psnr_db"] for name, m in after.items()},
        "motion_video_consistency": consistency,
        "mse": {"before": before["mse"],
                "after": sum(m["mse"] for m in after.values()) / len(after),
                "first_steps": _mean(history[:10]), "last_steps": _mean(history[-10:])},
        "precision": str(autocast_dtype(torch.device("cpu")) or torch.float32),
        "scaling_factor": 1.0 / std,
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "vocabulary_size": len(tokenizer),
        "seconds": round(time.monotonic() - start, 1),
    }
    text = json.dumps(summary, indent=2)
    write_text(join(codec.output, SUMMARY_NAME), text, cfg.storage)
    return json.loads(text)  # as a reader of codec.json sees it (lists, not tuples)


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))
