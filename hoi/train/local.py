"""Single-process closed-loop training and evaluation on a few shards.

The model issue's end-to-end check that the method learns at `svimo-small` size on one CPU
machine, and the quickest way to try a config change. `jobs/train.py` (Ray Train +
DeepSpeed) is the path that scales.

    run(cfg) -> summary: `jobs/train_local.py` (local.*): train, save, evaluate, and the
        masked stage after it
    train_local(cfg, clips, vae, text_encoder, steps=...) -> svimo, vid, history
    evaluate(cfg, svimo, vid, vae, text_encoder, clips, out_dir=...) -> metrics per mode

The optimiser follows `train` as the distributed engine does: AdamW at train.learning_rate
with train.weight_decay, gradient norms clipped at train.gradient_clipping, and the engine's
warm-up + cosine schedule (`lr_factor`, down to 0.1 of the peak); VID's own warm-up
(`loop.vid_warmup_steps`) runs at the peak rate before it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hoi.config import Config
from hoi.data.clip import Clip
from hoi.data.shards import collate_clips, load_clips
from hoi.diffusion.closed_loop import ClosedLoop
from hoi.diffusion.conditions import TrainBatch, encode_clips, image_noise_sigma
from hoi.diffusion.sampler import MODES, Sampler
from hoi.geometry.motion import POINTS_PER_OBJECT, denormalize, unpack
from hoi.metrics.consistency import video_motion_consistency
from hoi.metrics.motion import (
    hand_tool_distance,
    mpjpe,
    object_centre_error,
    object_chamfer,
    point_error,
    reprojection_error,
)
from hoi.metrics.stats import standard_error
from hoi.metrics.video import change_where_driven, psnr
from hoi.model.encoders import TextEncoder, VideoVAE, load_encoders
from hoi.model.svimo import SViMo
from hoi.model.vid import VID
from hoi.render.motion_video import render_motion_video
from hoi.render.mp4 import write_mp4
from hoi.render.preview import write_driven_gallery, write_motion_gallery, write_preview
from hoi.train.data import resize_clips
from hoi.train.engine import lr_factor

log = logging.getLogger(__name__)

GALLERY_CLIPS = 4
"""Validation clips in each mode's gallery picture."""


def run(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """`jobs/train_local.py`: train on prepare.output's train split for train.steps, save
    svimo/ and vid/ under local.output, sample local.eval_clips validation clips in every mode
    (metrics.json, previews/); then, with local.mask_steps, train on with the motion mask
    (CoInteract's second stage), save svimo-masked/ and vid-masked/ (VID trains on in that stage
    too) and sample joint and video_only (previews-masked/). Writes history.json too."""
    vae, text_encoder = load_encoders(cfg)
    loc, out = cfg.local, Path(cfg.local.output)
    train = load_clips(cfg.prepare.output, "train", cfg.data, cfg.storage)
    val = load_clips(cfg.prepare.output, "val", cfg.data, cfg.storage, limit=loc.eval_clips)
    svimo, vid, history = train_local(cfg, train, vae, text_encoder, steps=cfg.train.steps,
                                      progress=progress)
    svimo.save_pretrained(str(out / "svimo"))
    vid.save_pretrained(str(out / "vid"))
    metrics = evaluate(cfg, svimo, vid, vae, text_encoder, val, num_steps=cfg.sample.num_steps,
                       out_dir=out / "previews", modes=MODES[:-1])
    if loc.mask_steps:
        svimo.set_motion_mask(True)
        svimo, vid, more = train_local(cfg, train, vae, text_encoder, steps=loc.mask_steps,
                                       models=(svimo, vid), start_step=cfg.train.steps,
                                       progress=progress)
        history += more
        svimo.save_pretrained(str(out / "svimo-masked"))
        vid.save_pretrained(str(out / "vid-masked"))
        masked = evaluate(cfg, svimo, vid, vae, text_encoder, val,
                          num_steps=cfg.sample.num_steps, out_dir=out / "previews-masked",
                          modes=("joint", "video_only"))
        metrics |= {f"masked_{mode}": row for mode, row in masked.items()}
    (out / "history.json").write_text(json.dumps(history))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"steps": len(history), "final_loss": history[-1]["total"], "metrics": metrics}


def train_local(cfg: Config, clips: list[Clip] | TrainBatch, vae: VideoVAE,
                text_encoder: TextEncoder, *,
                steps: int, models: tuple[SViMo, VID] | None = None, start_step: int = 0,
                progress: bool = True) -> tuple[SViMo, VID, list[dict[str, float]]]:
    """Train SViMo and VID with the closed loop (algorithm 1), from scratch or on from
    `models`; `start_step` counts the steps those were trained for, so that a continuation
    (the masked stage) does not repeat the VID warm-up (`loop.vid_warmup_steps`).

    The clips are encoded once up front (latents, text, normalised motion; or given already
    encoded, by `encode`); each step draws train.batch_size of them. Returns the networks
    (eval mode) and per-step loss terms."""
    t = cfg.train
    torch.manual_seed(t.seed)
    svimo, vid = models if models is not None else (SViMo(cfg), VID(cfg))
    svimo.train()
    vid.train()
    g = torch.Generator().manual_seed(t.seed)
    data = (clips if isinstance(clips, TrainBatch)
            else encode(cfg, clips, vae, text_encoder, progress=progress))
    loop = ClosedLoop(cfg, svimo, vid, vae, text_encoder.encode([""]))
    params = [*svimo.parameters(), *vid.parameters()]
    opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    # VID's warm-up at the peak rate; the joint phase then gets the whole cosine schedule,
    # so that SViMo does not start its training at a rate the warm-up already decayed
    warmup = max(0, min(steps, cfg.loop.vid_warmup_steps - start_step))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < warmup else lr_factor(s - warmup, steps - warmup,
                                                        t.warmup_steps))
    history = []
    bar = tqdm(range(steps), desc="closed-loop training", disable=not progress)
    start = time.perf_counter()
    for step in bar:
        batch = data.select(torch.randint(0, len(data), (t.batch_size,), generator=g))
        terms = loop.losses(batch, g, loop.phase(start_step + step))
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.gradient_clipping)
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
    MPJPE (and its standard error over the clips), object point error and object centre
    error (mm), the objects' Chamfer distance (cm², order-free: VID learns the points with a
    Chamfer loss), the joints' and object
    centres' image error (pixels: what an overlay shows), and the right hand's distance
    to the tool (mm; the ground truth's own value is reported as `gt_hand_tool_mm`).
    `reference` holds the same
    motion errors for a *wrong* clip's ground truth (clips paired off by one), the level a
    motion that ignores its conditions would reach. With `out_dir`, each mode writes a preview
    of the first clip (`<mode>.mp4/.png`) and, where it makes motion, `<mode>-gallery.png`:
    the last frames of the first `GALLERY_CLIPS` clips, true and generated, with the true and
    the generated motion drawn over the true frame. Modes that output motion also report the
    video-motion consistency of the motion stream's video with that motion
    (`consistency_hit_rate` and its standard error over the clips), and motion_to_video
    whether the video follows the motion (`follows_motion`)."""
    device = vae.device
    g = torch.Generator(device).manual_seed(seed)
    collated = resize_clips(collate_clips(clips), cfg.data.height, cfg.data.width)
    gt_video = collated["video"]
    batch = encode_clips(collated, vae, text_encoder, cfg)
    # sampling uses the fixed median noise level on the reference image
    sigma = image_noise_sigma(cfg, len(clips), training=False)
    batch.image_latent = vae.encode_image(gt_video[:, 0], sigma, g)
    sampler = Sampler(cfg, svimo, vid, vae)
    null_text = text_encoder.encode([""]).to(device)
    K = batch.K.cpu()
    gt_joints, gt_points = unpack(_metres(cfg, batch.motion.cpu()))
    results: dict[str, dict[str, float]] = {
        "reference": _motion_metrics(gt_joints.roll(1, 0), gt_points.roll(1, 0),
                                     gt_joints, gt_points, K)}
    for mode in modes:
        start = time.perf_counter()
        sample = sampler(batch.image_latent, batch.text, batch.K, mode=mode, num_steps=num_steps,
                         null_text=null_text,
                         generator=torch.Generator(device).manual_seed(seed),
                         motion=batch.motion if mode == "motion_to_video" else None,
                         video_latent=batch.video_latent if mode == "video_to_motion" else None)
        # metrics and pictures on the CPU, in float32, whatever the model ran on
        video = vae.decode(sample.video_latent).cpu()
        motion = None if sample.motion is None else sample.motion.float().cpu()
        row = {"video_psnr_db": psnr(video, gt_video).mean().item(),
               "seconds": time.perf_counter() - start}
        if motion is not None:
            joints, points = unpack(_metres(cfg, motion))
            row |= _motion_metrics(joints, points, gt_joints, gt_points, K)
            # the motion video the motion stream made, against the 3D motion VID made
            stream = vae.decode(sample.motion_latent, stream="motion").cpu()
            eye, zero = torch.eye(3).expand(len(clips), 3, 3), torch.zeros(len(clips), 3)
            vmc = video_motion_consistency(joints, points, K, eye, zero, stream)
            hits = vmc.hit_rate[~vmc.hit_rate.isnan()]
            row |= {"consistency_hit_rate": hits.mean().item(),
                    "consistency_hit_rate_se": standard_error(hits)}
        if mode == "motion_to_video" and len(clips) > 1:
            row |= follows_motion(cfg, sampler, batch, sample.video_latent, gt_video, null_text,
                                  seed=seed, num_steps=num_steps,
                                  gallery=None if out_dir is None
                                  else Path(out_dir) / "motion_to_video-driven.png")
        results[mode] = row
        if out_dir is not None:
            _preview(cfg, Path(out_dir) / mode, video[0], motion, K[0], clips[0].fps)
            if motion is not None:
                _gallery(cfg, Path(out_dir) / f"{mode}-gallery.png", gt_video, video,
                         collated["motion_video"], motion, K)
    return results


@torch.no_grad()
def follows_motion(cfg: Config, sampler: Sampler, batch: TrainBatch, driven: torch.Tensor,
                   gt_video: torch.Tensor, null_text: torch.Tensor, *, seed: int,
                   num_steps: int | None, gallery: Path | None = None) -> dict[str, float]:
    """Whether the video follows the motion (issue 22's second target): each clip's
    `motion_to_video` sample under its own motion (`driven`, latents) against one under another
    clip's (clips paired off by one), from the same first frame, prompt and noise.

    Returns the videos' PSNR against the clip's true frames under the other motion
    (`other_motion_video_psnr_db`), the paired gain of the own motion over it and its
    standard error over the clips (`psnr_gain_db`, `psnr_gain_se_db`), and where VID's
    `video_to_motion` finds the hands in each generated video: its MPJPE to the motion that
    drove the video (`read_mpjpe_driving_mm`) and to the other one (`read_mpjpe_other_mm`),
    both videos of every clip pooled; and how much more each video moves where its driving
    motion has the hands and objects than where the other has them
    (`change_where_driven_grey`, `hoi.metrics.video.change_where_driven`, and its standard
    error over the videos). With `gallery`, `write_driven_gallery` of the first
    `GALLERY_CLIPS` clips."""
    device = driven.device
    own, other = batch.motion, batch.motion.roll(1, 0)
    generate = lambda mode, **given: sampler(  # noqa: E731
        batch.image_latent, batch.text, batch.K, mode=mode, num_steps=num_steps,
        null_text=null_text, generator=torch.Generator(device).manual_seed(seed), **given)
    other_driven = generate("motion_to_video", motion=other).video_latent
    videos = [sampler.vae.decode(latent).cpu() for latent in (driven, other_driven)]
    own_psnr, other_psnr = (psnr(video, gt_video) for video in videos)
    gain = own_psnr - other_psnr
    read = [generate("video_to_motion", video_latent=latent).motion.float().cpu()
            for latent in (driven, other_driven)]
    joints = lambda motion: unpack(_metres(cfg, motion.float().cpu()))[0]  # noqa: E731
    to_driving = torch.cat([mpjpe(joints(read[0]), joints(own)),
                            mpjpe(joints(read[1]), joints(other))])
    to_other = torch.cat([mpjpe(joints(read[0]), joints(other)),
                          mpjpe(joints(read[1]), joints(own))])
    eye, zero = torch.eye(3).expand(len(own), 3, 3), torch.zeros(len(own), 3)
    drawn = [render_motion_video(*unpack(_metres(cfg, m.cpu())), batch.K.cpu().float(), eye,
                                 zero, cfg.data.height, cfg.data.width) for m in (own, other)]
    change = torch.cat([change_where_driven(videos[0], drawn[0], drawn[1]),
                        change_where_driven(videos[1], drawn[1], drawn[0])])
    change = change[~change.isnan()]
    if gallery is not None:
        n = min(GALLERY_CLIPS, len(own))
        write_driven_gallery(gallery, drawn[0][:n].numpy(), videos[0][:n].numpy(),
                             drawn[1][:n].numpy(), videos[1][:n].numpy())
        log.info("gallery %s", gallery)
    return {"other_motion_video_psnr_db": other_psnr.mean().item(),
            "psnr_gain_db": gain.mean().item(),
            "psnr_gain_se_db": standard_error(gain),
            "read_mpjpe_driving_mm": 1000 * to_driving.mean().item(),
            "read_mpjpe_other_mm": 1000 * to_other.mean().item(),
            "change_where_driven_grey": change.mean().item(),
            "change_where_driven_se_grey": standard_error(change)}


# ---------------------------------------------------------------------------------------------


def encode(cfg: Config, clips: list[Clip], vae: VideoVAE, text_encoder: TextEncoder,
           chunk: int = 8, progress: bool = True) -> TrainBatch:
    """All clips as one training batch, encoded `chunk` at a time."""
    parts = [encode_clips(collate_clips(clips[i:i + chunk]), vae, text_encoder, cfg)
             for i in tqdm(range(0, len(clips), chunk), desc="encoding clips", unit="chunk",
                           disable=not progress or len(clips) <= chunk)]
    return TrainBatch(**{f.name: torch.cat([getattr(p, f.name) for p in parts])
                         for f in dataclasses.fields(TrainBatch)})


def _metres(cfg: Config, motion: torch.Tensor) -> torch.Tensor:
    return denormalize(motion.float(), cfg.vid.coord_center, cfg.vid.coord_scale)


def _motion_metrics(joints: torch.Tensor, points: torch.Tensor, gt_joints: torch.Tensor,
                    gt_points: torch.Tensor, K: torch.Tensor) -> dict[str, float]:
    mm = lambda x: 1000 * x.mean().item()  # noqa: E731
    centres = [p.unflatten(2, (2, POINTS_PER_OBJECT)).mean(3) for p in (points, gt_points)]
    per_clip = mpjpe(joints, gt_joints)
    return {"mpjpe_mm": mm(per_clip), "mpjpe_se_mm": 1000 * standard_error(per_clip),
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


def _preview(cfg: Config, stem: Path, video: torch.Tensor, motion: torch.Tensor | None,
             K: torch.Tensor, fps: float) -> None:
    """RGB | its change since frame 1 | motion video of the generated 3D motion | overlay |
    3D plot (camera frame); only the RGB video in video-only mode."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if motion is None:  # video-only mode: nothing 3D to show
        write_mp4(stem.with_name(stem.name + ".mp4"), video.numpy(), fps)
        return
    eye, zero = torch.eye(3), torch.zeros(3)
    joints, points = unpack(_metres(cfg, motion[:1]))
    motion_video = render_motion_video(joints, points, K[None], eye[None], zero[None],
                                       cfg.data.height, cfg.data.width)[0]
    joints, points = joints[0], points[0]
    write_preview(stem, video.numpy(), motion_video.numpy(), joints.numpy(), points.numpy(),
                  K.numpy(), eye.numpy(), zero.numpy(), fps)
    log.info("preview %s.png", stem)
