"""Streaming training data: shards -> encoded batches, one Ray Dataset per stage.

Two sources, the same batches:

    precomputed (`hoi.train.latents`): read_latents (Parquet read, in Ray Data read tasks)
    online:  read_clips (read + decode) -> map_batches(Encoder): resize to the stage, VAE + T5,
             on an actor pool that holds the frozen encoders once (GPU fractions on a GPU
             cluster)
      -> blocks of one row -> Ray Train's streaming split -> iter_torch_batches -> TrainBatch

A stage is one stream over as many seeded passes (epochs) of the shard files as its steps
need, so its encoder actors start once, not once per epoch. Its order is kept
(`ingest_config`), and with blocks of one row the split deals the rows round robin: row i
goes to worker i mod workers, so the first c micro-batches of every worker are the stream's
first c x batch_size x workers rows, each row carrying its `position`. A resumed run's stream
starts at the checkpoint's row (`StageStream`: no row before it is read, decoded or
encoded), and continues as the uninterrupted one would. Encoding runs ahead of the step
(`train.prefetch_batches`), so a train worker only waits for data when the pipeline falls
behind; `hoi.train.meter` measures that wait. Nothing is materialised.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import ray
import ray.train
import torch
import torch.nn.functional as F

from hoi.artifacts import resume_checkpoint
from hoi.config import Config, from_dict
from hoi.data.schema import LATENT_ARRAYS
from hoi.data.shards import POSITION, ClipCollate, latent_twin, read_clips, read_latents
from hoi.diffusion.conditions import TrainBatch, encode_clips
from hoi.render.motion_video import render_motion_video

log = logging.getLogger(__name__)

# Columns of an encoded batch, as TrainBatch's fields.
ENCODED_COLUMNS = LATENT_ARRAYS


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


class Encoder:
    """Clip batches -> encoded TrainBatch columns (numpy), at one stage's resolution; loads
    the VAE and T5 once. A Ray Data actor in the online stream, and the encode pass's
    (`hoi.train.latents`) encoder: precomputed latents are this class's output."""

    def __init__(self, cfg: dict[str, Any], height: int, width: int):
        # imported here, not with the module: the stream's coordinator and read tasks
        # unpickle this module and need neither diffusers nor transformers
        from hoi.model.encoders import load_encoders

        full = from_dict(Config, cfg)
        self.cfg = full.at_size(height, width)
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            torch.set_num_threads(max(1, int(ray.get_runtime_context()
                                             .get_assigned_resources().get("CPU", 1))))
        on_gpu = torch.cuda.is_available() and bool(ray.get_gpu_ids())
        # bf16 on a GPU (T5 v1.1 XXL: 9.5 GB rather than 19), fp32 on a CPU
        self.vae, self.text_encoder = load_encoders(
            full, device="cuda" if on_gpu else "cpu", dtype=torch.bfloat16 if on_gpu else None)

    def encode(self, clips: dict[str, Any], height: int | None = None,
               width: int | None = None) -> dict[str, np.ndarray]:
        """A ClipCollate batch -> `ENCODED_COLUMNS` (float32 numpy), at the stage's size or
        at (height, width)."""
        cfg = self.cfg if height is None else self.cfg.at_size(height, width)
        clips = resize_clips(clips, cfg.data.height, cfg.data.width)
        encoded = encode_clips(clips, self.vae, self.text_encoder, cfg)
        return {name: getattr(encoded, name).float().cpu().numpy() for name in ENCODED_COLUMNS}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.encode(ClipCollate()(batch)) | {POSITION: batch[POSITION]}


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


def stage_dataset(cfg: Config, shards: list[tuple[str, int]], stage: int, start: int = 0,
                  latents: bool = False) -> ray.data.Dataset:
    """The lazy dataset of resolution stage `stage` from row `start` of its stream
    (`stage_files`): the precomputed latent shards beside those files (`latents`), or the
    clips decoded and encoded at the stage's size, as one stream, so that the encoders load
    once per stage; in blocks of one row."""
    t = cfg.train
    height, width, steps = cfg.train_stages()[stage]
    files = stage_files(cfg, shards, stage, steps)
    if latents:
        stream = read_latents([latent_twin(t.shards, f, height, width) for f in files],
                              cfg.storage, start=start, num_cpus=t.read_cpus
                              ).select_columns([*ENCODED_COLUMNS, POSITION])
    else:
        clips = read_clips(files, cfg.storage, num_frames=cfg.data.num_frames,
                           height=cfg.data.height, width=cfg.data.width, num_cpus=t.read_cpus,
                           start=start)
        stream = clips.map_batches(
            Encoder, fn_constructor_kwargs={"cfg": cfg.to_dict(), "height": height,
                                            "width": width},
            batch_size=t.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=t.encode_actors),
            num_cpus=t.encode_cpus, num_gpus=t.encode_gpus or None,
            accelerator_type=t.accelerator_type)
    # Every row its own block: Ray Train's split then deals rows round robin (a streaming
    # repartition would take a whole CPU per task that this cannot fuse with)
    stream.context.target_max_block_size = 1
    # built in Ray Train's controller at every worker-group start: its bars would fill the
    # driver's log, and the step line says more
    stream.context.enable_progress_bars = False
    return stream


def stream_position(consumed: int, rank: int, world: int, batch_size: int) -> int:
    """The stream row that worker `rank`'s micro-batch `consumed` (counted from 0) starts
    at: the rows before it are the first `consumed` micro-batches of every worker."""
    return consumed * batch_size * world + rank


def resume_start(cfg: Config, stage: int) -> int:
    """The stream row that stage `stage` resumes at: where the run's checkpoint to resume
    from (`resume_checkpoint`) left that stage's stream (0 for a new run or another stage)."""
    resumed = resume_checkpoint(cfg)
    if resumed is None or resumed[1].stage != stage:
        return 0
    state = resumed[1]
    return stream_position(state.consumed, 0, state.world_size, cfg.train.batch_size)


class StageStream:
    """A stage's dataset as Ray Train asks for it, at every start of a worker group (a new
    run, a rerun of the run, a group restarted after a failure): from where the run's latest
    checkpoint left it (`resume_start`), so that a resume reads nothing it skips."""

    def __init__(self, cfg: Config, shards: list[tuple[str, int]], stage: int, latents: bool):
        self.cfg, self.shards, self.stage, self.latents = cfg.to_dict(), shards, stage, latents

    def __call__(self) -> ray.data.Dataset:
        cfg = from_dict(Config, self.cfg)
        start = resume_start(cfg, self.stage)
        if start:
            log.info("stage %d's stream resumes at row %d", self.stage + 1, start)
        return stage_dataset(cfg, self.shards, self.stage, start, self.latents)


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
