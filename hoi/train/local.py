"""Single-process closed-loop training and evaluation on a few shards.

The model issue's end-to-end check that the method learns at `svimo-small` size on one CPU
machine, and the quickest way to try a config change. `jobs/train.py` (Ray Train +
DeepSpeed) is the path that scales.

    train_local(cfg, clips, vae, text_encoder, steps=...) -> svimo, vid, history
    evaluate(cfg, svimo, vid, vae, text_encoder, clips, out_dir=...) -> metrics per mode
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from hoi.config import Config, StorageConfig
from hoi.data.clip import Clip
from hoi.data.schema import row_to_clip
from hoi.data.shards import collate_clips, list_shards
from hoi.diffusion.closed_loop import ClosedLoop
from hoi.diffusion.conditions import TrainBatch, encode_clips, image_noise_sigma
from hoi.diffusion.sampler import MODES, Sampler
from hoi.geometry.motion import POINTS_PER_OBJECT, denormalize, unpack
from hoi.metrics.motion import (
    hand_tool_distance,
    mpjpe,
    object_centre_error,
    object_chamfer,
    point_error,
    reprojection_error,
)
from hoi.model.encoders import TextEncoder, VideoVAE
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.render.export import write_motion_gallery, write_mp4, write_preview
from hoi.render.motion_video import render_motion_video
from hoi.storage import resolve

log = logging.getLogger(__name__)

GALLERY_CLIPS = 4
"""Validation clips in each mode's gallery picture."""


def load_clips(root: str, split: str, cfg: Config, storage: StorageConfig | None = None,
               limit: int | None = None) -> list[Clip]:
    """Clips of one split of a shard root, read in this process (no Ray)."""
    storage = storage or StorageConfig()
    clips: list[Clip] = []
    for path in list_shards(root, storage, split):
        fs, inner = resolve(path, storage)
        for row in pq.read_table(inner, filesystem=fs).to_pylist():
            clips.append(row_to_clip(row, cfg.data.num_frames, cfg.data.height, cfg.data.width))
            if limit is not None and len(clips) >= limit:
                return clips
    if not clips:
        raise FileNotFoundError(f"no {split} clips under {root!r}")
    return clips


def train_local(cfg: Config, clips: list[Clip] | TrainBatch, vae: VideoVAE,
                text_encoder: TextEncoder, *,
                steps: int, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
                models: tuple[SViMo, VID] | None = None, start_step: int = 0,
                progress: bool = True) -> tuple[SViMo, VID, list[dict[str, float]]]:
    """Train SViMo and VID with the closed loop (algorithm 1), from scratch or on from
    `models`; `start_step` counts the steps those were trained for, so that a continuation
    (the masked stage) does not repeat the VID warm-up (`loop.vid_warmup_steps`).

    The clips are encoded once up front (latents, text, normalised motion; or given already
    encoded, by `encode`); each step draws `batch_size` of them. Returns the networks (eval mode) and per-step loss terms."""
    torch.manual_seed(seed)
    svimo, vid = models if models is not None else (SViMo(cfg), VID(cfg))
    svimo.train()
    vid.train()
    g = torch.Generator().manual_seed(seed)
    data = (clips if isinstance(clips, TrainBatch)
            else encode(cfg, clips, vae, text_encoder, g, progress=progress))
    loop = ClosedLoop(cfg, svimo, vid, vae, text_encoder.encode([""]))
    params = [*svimo.parameters(), *vid.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # VID's warm-up at the peak rate; the joint phase then gets the whole cosine schedule,
    # so that SViMo does not start its training at a rate the warm-up already decayed
    warmup = max(0, min(steps, cfg.loop.vid_warmup_steps - start_step))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < warmup else _cosine(s - warmup, steps - warmup, warmup=20))
    history = []
    bar = tqdm(range(steps), desc="closed-loop training", disable=not progress)
    start = time.perf_counter()
    for step in bar:
        batch = data.select(torch.randint(0, len(data), (batch_size,), generator=g))
        terms = loop.losses(batch, g, loop.phase(start_step + step))
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        row = {k: v.item() for k, v in terms.items()} | {
            "step": start_step + step, "grad_norm": grad_norm.item(), "lr": sched.get_last_lr()[0],
            "seconds": time.perf_counter() - start}
        history.append(row)
        svimo_term = row.get("svimo", row.get("svimo_video", 0))  # warm-up: the video term
        bar.set_postfix(loss=f"{row['total']:.3f}", svimo=f"{svimo_term:.3f}",
                        vid=f"{row.get('vid', 0):.3f}")
    return svimo.eval(), vid.eval(), history


@torch.no_grad()
def evaluate(cfg: Config, svimo: SViMo, vid: VID, vae: VideoVAE, text_encoder: TextEncoder,
             clips: list[Clip], *, seed: int = 0, num_steps: int | None = None,
             out_dir: str | Path | None = None, modes: tuple[str, ...] = MODES
             ) -> dict[str, dict[str, float]]:
    """Sample every clip's (first frame, prompt) in each mode; compare with its ground truth.

    Per mode: video PSNR (dB) against the clip's frames, and for modes that output motion:
    MPJPE, object point error and object centre error (mm), the objects' Chamfer distance
    (cm², order-free: VID learns the points with a Chamfer loss), the joints' and object
    centres' image error (pixels: what an overlay shows), and the right hand's distance
    to the tool (mm; the ground truth's own value is reported as `gt_hand_tool_mm`).
    `reference` holds the same
    motion errors for a *wrong* clip's ground truth (clips paired off by one), the level a
    motion that ignores its conditions would reach. With `out_dir`, each mode writes a preview
    of the first clip (`<mode>.mp4/.png`) and, where it makes motion, `<mode>-gallery.png`:
    the last frames of the first `GALLERY_CLIPS` clips, true and generated, with the true and
    the generated motion drawn over the true frame."""
    g = torch.Generator().manual_seed(seed)
    collated = collate_clips(clips)
    gt_video = collated["video"]
    batch = encode_clips(collated, vae, text_encoder, cfg, g)
    # sampling uses the fixed median noise level on the reference image
    sigma = image_noise_sigma(cfg, len(clips), training=False)
    batch.image_latent = vae.encode_image(gt_video[:, 0], sigma, g)
    sampler = Sampler(cfg, svimo, vid, vae)
    gt_joints, gt_points = unpack(_metres(cfg, batch.motion))
    results: dict[str, dict[str, float]] = {
        "reference": _motion_metrics(gt_joints.roll(1, 0), gt_points.roll(1, 0),
                                     gt_joints, gt_points, batch.K)}
    for mode in modes:
        start = time.perf_counter()
        sample = sampler(batch.image_latent, batch.text, batch.K, mode=mode, num_steps=num_steps,
                         generator=torch.Generator().manual_seed(seed),
                         motion=batch.motion if mode == "motion_to_video" else None,
                         video_latent=batch.video_latent if mode == "video_to_motion" else None)
        video = vae.decode(sample.video_latent)
        row = {"video_psnr_db": _psnr(video, gt_video), "seconds": time.perf_counter() - start}
        if sample.motion is not None:
            joints, points = unpack(_metres(cfg, sample.motion))
            row |= _motion_metrics(joints, points, gt_joints, gt_points, batch.K)
        results[mode] = row
        if out_dir is not None:
            _preview(cfg, Path(out_dir) / mode, video[0], sample, batch.K[0], clips[0].fps)
            if sample.motion is not None:
                _gallery(cfg, Path(out_dir) / f"{mode}-gallery.png", gt_video, video,
                         collated["motion_video"], sample.motion, batch.K)
    return results


# ---------------------------------------------------------------------------------------------


def encode(cfg: Config, clips: list[Clip], vae: VideoVAE, text_encoder: TextEncoder,
           g: torch.Generator, chunk: int = 8, progress: bool = True) -> TrainBatch:
    """All clips as one training batch, encoded `chunk` at a time."""
    parts = [encode_clips(collate_clips(clips[i:i + chunk]), vae, text_encoder, cfg, g)
             for i in tqdm(range(0, len(clips), chunk), desc="encoding clips", unit="chunk",
                           disable=not progress or len(clips) <= chunk)]
    return TrainBatch(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                         for f in dataclasses.fields(TrainBatch)})


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _metres(cfg: Config, motion: torch.Tensor) -> torch.Tensor:
    return denormalize(motion.float(), cfg.vid.coord_center, cfg.vid.coord_scale)


def _psnr(video: torch.Tensor, target: torch.Tensor) -> float:
    mse = (video.float() - target.float()).square().mean(dim=(1, 2, 3, 4))
    return (10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))).mean().item()


def _motion_metrics(joints: torch.Tensor, points: torch.Tensor, gt_joints: torch.Tensor,
                    gt_points: torch.Tensor, K: torch.Tensor) -> dict[str, float]:
    mm = lambda x: 1000 * x.mean().item()  # noqa: E731
    centres = [p.unflatten(2, (2, POINTS_PER_OBJECT)).mean(3) for p in (points, gt_points)]
    return {"mpjpe_mm": mm(mpjpe(joints, gt_joints)),
            "object_point_error_mm": mm(point_error(points, gt_points)),
            "object_chamfer_cm2": 1e4 * object_chamfer(points, gt_points).mean().item(),
            "object_centre_mm": mm(object_centre_error(points, gt_points)),
            "joints_px": reprojection_error(joints, gt_joints, K).mean().item(),
            "object_centre_px": reprojection_error(*centres, K).mean().item(),
            "hand_tool_mm": mm(hand_tool_distance(joints, points)),
            "gt_hand_tool_mm": mm(hand_tool_distance(gt_joints, gt_points))}


def _gallery(cfg: Config, path: Path, gt_video: torch.Tensor, video: torch.Tensor,
             gt_motion_video: torch.Tensor, motion: torch.Tensor, K: torch.Tensor) -> None:
    n = min(GALLERY_CLIPS, len(video))
    joints, points = unpack(_metres(cfg, motion[:n]))
    eye, zero = torch.eye(3).expand(n, 3, 3), torch.zeros(n, 3)  # the motion is camera-frame
    motion_video = render_motion_video(joints, points, K[:n], eye, zero, cfg.data.height,
                                       cfg.data.width)
    write_motion_gallery(path, *(x[:n].to(torch.uint8).numpy() for x in
                                 (gt_video, video, gt_motion_video, motion_video)))
    log.info("gallery %s", path)


def _preview(cfg: Config, stem: Path, video: torch.Tensor, sample, K: torch.Tensor,
             fps: float) -> None:
    """RGB | motion video of the generated 3D motion | overlay | 3D plot (camera frame);
    only the RGB video in video-only mode."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if sample.motion is None:  # video-only mode: nothing 3D to show
        write_mp4(stem.with_name(stem.name + ".mp4"), video.numpy(), fps)
        return
    eye, zero = torch.eye(3), torch.zeros(3)
    joints, points = unpack(_metres(cfg, sample.motion[:1]))
    motion_video = render_motion_video(joints, points, K[None], eye[None], zero[None],
                                       cfg.data.height, cfg.data.width)[0]
    joints, points = joints[0], points[0]
    write_preview(stem, video.numpy(), motion_video.numpy(), joints.numpy(), points.numpy(),
                  K.numpy(), eye.numpy(), zero.numpy(), fps)
    log.info("preview %s.png", stem)
