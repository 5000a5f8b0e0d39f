"""Streaming training data: shards -> clips -> encoded batches, one Ray Dataset per stage.

    read_clips (Parquet read + decode, in Ray Data read tasks)
      -> map_batches(Encoder): resize to the stage, VAE + T5, on an actor pool that holds the
         frozen encoders once (GPU fractions on a GPU cluster)
      -> Ray Train's streaming split across workers -> iter_torch_batches -> TrainBatch

Encoding runs in the pipeline, ahead of the step (`train.prefetch_batches`), so a train
worker only waits for data when the pipeline falls behind; `hoi.train.meter` measures that
wait. Nothing is materialised. A stage is one stream over as many seeded passes (epochs) of
the shard files as its steps need, so its encoder actors start once, not once per epoch; its
order is kept (`ingest_config`), so a resumed run reads what the uninterrupted one would.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import ray
import ray.train
import torch
import torch.nn.functional as F

from hoi.config import Config, from_dict
from hoi.data.shards import ClipCollate, read_clips
from hoi.diffusion.conditions import TrainBatch, encode_clips
from hoi.model.encoders import load_encoders
from hoi.render.motion_video import render_motion_video

# Columns of an encoded batch, as TrainBatch's fields.
ENCODED_COLUMNS = ("video_latent", "motion_latent", "image_latent", "text", "motion", "K")


def resize_clips(clips: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """A ClipCollate batch at another resolution: RGB resampled (antialiased bilinear), the
    intrinsics scaled, and the motion video drawn again at the new size (`Proj` is exact at
    any size, where resampling would blur its one-pixel bones)."""
    B, N, H, W, _ = clips["video"].shape
    if (H, W) == (height, width):
        return clips
    sx, sy = width / W, height / H
    video = clips["video"].flatten(0, 1).permute(0, 3, 1, 2).float()
    video = F.interpolate(video, size=(height, width), mode="bilinear", antialias=True,
                          align_corners=False)
    video = video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    K = clips["K"].clone().float()
    # pixel centres at integers: u -> (u + 0.5) * s - 0.5
    K[:, 0, 0] *= sx
    K[:, 1, 1] *= sy
    K[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    K[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
    motion_video = render_motion_video(clips["joints"].float(), clips["points"].float(), K,
                                       clips["R"].float(), clips["T"].float(), height, width)
    return clips | {"video": video.reshape(B, N, height, width, 3), "K": K,
                    "motion_video": motion_video}


def batch_seed(seed: int, clip_ids: list[str]) -> int:
    """A seed fixed by the run seed and the batch's clips (stable across processes, unlike
    Python's salted hash): the same clips get the same image-noise augmentation."""
    return zlib.crc32("\0".join([str(seed), *clip_ids]).encode())


class Encoder:
    """Ray Data actor: clip batches -> encoded TrainBatch columns (numpy), at one stage's
    resolution. Loads the VAE and T5 once per actor."""

    def __init__(self, cfg: dict[str, Any], height: int, width: int):
        full = from_dict(Config, cfg)
        self.cfg = full.at_size(height, width)
        torch.set_num_threads(max(1, int(ray.get_runtime_context()
                                         .get_assigned_resources().get("CPU", 1))))
        on_gpu = torch.cuda.is_available() and bool(ray.get_gpu_ids())
        # bf16 on a GPU (T5 v1.1 XXL: 9.5 GB rather than 19), fp32 on a CPU
        self.vae, self.text_encoder = load_encoders(
            full, device="cuda" if on_gpu else "cpu", dtype=torch.bfloat16 if on_gpu else None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = resize_clips(ClipCollate()(batch), self.cfg.data.height, self.cfg.data.width)
        device = self.vae.device
        generator = torch.Generator(device).manual_seed(
            batch_seed(self.cfg.train.seed, list(clips["clip_id"])))
        encoded = encode_clips(clips, self.vae, self.text_encoder, self.cfg, generator)
        return {name: getattr(encoded, name).float().cpu().numpy() for name in ENCODED_COLUMNS}


def stage_files(cfg: Config, shards: list[tuple[str, int]], stage: int, steps: int
                ) -> list[str]:
    """The shard files one resolution stage streams, in order: enough seeded permutations of
    `shards` ((path, clips) pairs) to feed `steps` optimiser steps of every worker, plus one
    spare pass (the equal split across workers may leave a few clips out)."""
    t = cfg.train
    needed = steps * t.batch_size * t.gradient_accumulation * t.num_workers
    per_pass = sum(rows for _, rows in shards)
    passes = math.ceil(needed / per_pass) + 1
    rng = np.random.default_rng([t.seed, stage])
    return [shards[i][0] for _ in range(passes) for i in rng.permutation(len(shards))]


def stage_dataset(cfg: Config, shards: list[tuple[str, int]], stage: int) -> ray.data.Dataset:
    """The lazy dataset of resolution stage `stage`: its files (`stage_files`) read, decoded
    and encoded at the stage's size, as one stream, so the encoders load once per stage."""
    t = cfg.train
    height, width, steps = cfg.train_stages()[stage]
    clips = read_clips(stage_files(cfg, shards, stage, steps), cfg.storage,
                       num_frames=cfg.data.num_frames, height=cfg.data.height,
                       width=cfg.data.width, num_cpus=t.read_cpus)
    return clips.map_batches(
        Encoder, fn_constructor_kwargs={"cfg": cfg.to_dict(), "height": height, "width": width},
        batch_size=t.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=t.encode_actors),
        num_cpus=t.encode_cpus, num_gpus=t.encode_gpus or None,
        accelerator_type=t.accelerator_type)


def ingest_config() -> ray.train.DataConfig:
    """Ray Train's ingest with the stream's order kept: every run of a stage reads its
    batches in the same order and splits them the same way across workers (the splitter then
    deals each block to the worker with the fewest rows so far), so a resume that skips the
    micro-batches taken before its checkpoint skips exactly those, and the run continues as
    the uninterrupted one would. Without it Ray Data yields blocks as they finish."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


def to_train_batch(batch: dict[str, torch.Tensor], device: torch.device) -> TrainBatch:
    """An `iter_torch_batches` batch of encoded columns -> TrainBatch on `device`."""
    return TrainBatch(**{name: batch[name].to(device) for name in ENCODED_COLUMNS})
