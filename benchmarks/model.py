"""The model benchmark: cost of a sampling step and of a training step; FLOPs of svimo-5b
(`hoi.model`)."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.harness import Rows, benchmark, timed
from hoi.render.motion_video import render_motion_video


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flavour", default="svimo-small", help="size preset to time")
    parser.add_argument("--batch", type=int, default=4, help="clips per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")


def _camera(cfg) -> np.ndarray:
    from hoi.geometry.camera import intrinsics

    return intrinsics(cfg.data.height, cfg.data.width, cfg.data.fov_y_deg)


def _proj(cfg, batch) -> torch.Tensor:
    """The motion video of a (normalised) motion: the Proj part of render_guidance."""
    from hoi.geometry.motion import denormalize, unpack

    joints, points = unpack(denormalize(batch.motion, cfg.vid.coord_center, cfg.vid.coord_scale))
    B = joints.shape[0]
    return render_motion_video(joints, points, batch.K, torch.eye(3).expand(B, 3, 3),
                               torch.zeros(B, 3), cfg.data.height, cfg.data.width)


@benchmark("model", "sampling/training step cost breakdown and svimo-5b FLOPs (hoi.model)",
           _model_arguments)
def model(args: argparse.Namespace) -> Rows:
    """Seconds of each stage of one closed-loop sampling step (batch 1) and of one training
    step (forward + backward, --batch clips), on random weights of the flavour's sizes (a
    step costs the same whatever the weights); then analytic FLOPs of svimo-5b."""
    from hoi.codec.vae import build_vae
    from hoi.config import load_config
    from hoi.diffusion.closed_loop import ClosedLoop
    from hoi.diffusion.conditions import TrainBatch, image_condition, render_guidance
    from hoi.diffusion.schedule import Schedule, step
    from hoi.model.encoders import VideoVAE
    from hoi.model.flops import svimo_forward_flops, training_step_flops, vid_forward_flops
    from hoi.model.svimo import SViMo
    from hoi.model.vid import VID

    cfg = load_config(flavour=args.flavour)
    torch.manual_seed(0)
    svimo, vid, vae = SViMo(cfg).eval(), VID(cfg).eval(), VideoVAE(build_vae(cfg))
    F, h, w = cfg.latent_shape
    g = torch.Generator().manual_seed(0)

    def batch_of(b: int) -> TrainBatch:
        lat = lambda: torch.randn(b, F, cfg.latent.channels, h, w)  # noqa: E731
        return TrainBatch(video_latent=lat(), motion_latent=lat(), image_latent=lat()[:, :1],
                          text=torch.randn(b, cfg.model.max_text_tokens, cfg.model.text_embed_dim),
                          motion=torch.randn(b, cfg.data.num_frames, 340, 3) * 0.5,
                          K=torch.from_numpy(_camera(cfg))[None].expand(b, 3, 3))

    one = batch_of(1)
    t = torch.tensor([500])
    image = image_condition(one.image_latent, F, cfg.diffusion.image_latent)
    scheduler = Schedule(cfg.diffusion).sampling_scheduler("ddim", 50)
    frames = {}
    stages = {
        "VID (guidance, no grad)": lambda: vid(one.motion, one.video_latent, one.motion_latent, t,
                                                 one.text),
        "Proj (render motion video)": lambda: frames.update(v=_proj(cfg, one)),
        "VAE encode (guidance)": lambda: vae.encode(frames["v"]),
        "SViMo": lambda: svimo(one.video_latent, image, one.text, t, one.motion_latent,
                               one.motion_latent),
        "VID (on SViMo's x0)": lambda: vid(one.motion, one.video_latent, one.motion_latent, t,
                                             one.text),
        "scheduler steps (x3)": lambda: [step(scheduler, x, 981, x) for x in
                                         (one.video_latent, one.motion_latent, one.motion)],
    }
    rows = []
    with torch.no_grad():
        _proj(cfg, one)
        frames["v"] = _proj(cfg, one)
        for name, fn in stages.items():
            rows.append({"what": f"sampling step: {name}", "flavour": cfg.flavour,
                         "seconds": round(timed(fn, args.repeats), 4)})
        total = sum(r["seconds"] for r in rows)
        for r in rows:
            r["share"] = f"{100 * r['seconds'] / total:.0f}%"
        rows.append({"what": "sampling step: total", "flavour": cfg.flavour,
                     "seconds": round(total, 4), "share": "100%"})
        guidance = lambda: render_guidance(one.motion, one.K, vae, cfg)  # noqa: E731
        rows.append({"what": "sampling step: Proj + VAE via render_guidance",
                     "flavour": cfg.flavour, "seconds": round(timed(guidance, args.repeats), 4)})

    svimo.train()
    vid.train()
    train_batch = batch_of(args.batch)
    loop = ClosedLoop(cfg, svimo, vid, vae, torch.zeros(1, cfg.model.max_text_tokens,
                                                        cfg.model.text_embed_dim))

    def train_step() -> None:
        loop.losses(train_batch, g)["total"].backward()

    seconds = timed(train_step, args.repeats)
    rows.append({"what": f"training step (batch {args.batch}, fwd + bwd)",
                 "flavour": cfg.flavour, "seconds": round(seconds, 4),
                 "share": f"{args.batch / seconds:.2f} clips/s, "
                          f"{training_step_flops(cfg, args.batch) / seconds / 1e9:.1f} GFLOP/s"})

    big = load_config(flavour="svimo-5b")
    masked = load_config(flavour="svimo-5b", overrides=["--model.motion_attention_mask", "true"])
    for label, c, motion in (("joint", big, True), ("joint, motion mask", masked, True),
                             ("video-only", masked, False)):
        fl = svimo_forward_flops(c, motion=motion)
        rows.append({"what": f"svimo-5b SViMo forward ({label})", "flavour": "svimo-5b",
                     "TFLOP": round(fl["total"] / 1e12, 1),
                     "share": f"attention scores {100 * fl['attention_scores'] / fl['total']:.0f}%"})
    rows.append({"what": "svimo-5b VID forward", "flavour": "svimo-5b",
                 "TFLOP": round(vid_forward_flops(big)["total"] / 1e12, 2)})
    rows.append({"what": "svimo-5b training step per clip (model FLOPs)", "flavour": "svimo-5b",
                 "TFLOP": round(training_step_flops(big, 1) / 1e12, 1)})
    return rows
