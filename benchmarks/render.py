"""The render benchmark: motion video and RGB frames per second (`hoi.render`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.harness import Rows, benchmark, timed
from hoi.config import DataConfig
from hoi.data.synthetic import generate_clip
from hoi.render.motion_video import render_motion_video
from hoi.render.rgb import render_rgb


def _clips(batch: int, frames: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """Renderer inputs of `batch` synthetic clips (the data generator's, seeds 0...)."""
    data = DataConfig(height=height, width=width, num_frames=frames)
    clips, looks = zip(*(generate_clip(seed, data) for seed in range(batch)), strict=True)
    stack = lambda xs: torch.from_numpy(np.stack(xs))  # noqa: E731
    return {
        "joints": stack([c.joints for c in clips]), "points": stack([c.points for c in clips]),
        "K": stack([c.K for c in clips]), "R": stack([c.R for c in clips]),
        "T": stack([c.T for c in clips]),
        "surfels": stack([x.surfels for x in looks]), "normals": stack([x.normals for x in looks]),
        "surfel_rgb": stack([x.surfel_rgb for x in looks]),
        "skin_rgb": stack([x.skin_rgb for x in looks]),
        "table_rgb": stack([x.table_rgb for x in looks]),
        "wall_rgb": stack([x.wall_rgb for x in looks]),
        "table_pattern": torch.tensor([x.table_pattern for x in looks]),
    }


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (median)")
    parser.add_argument("--device", default="cpu", help="torch device of the inputs")


def _renderer(kind: str, x: dict[str, torch.Tensor], height: int, width: int
              ) -> Callable[[], torch.Tensor]:
    """A call of one renderer on inputs x that waits for the device to finish."""
    def call() -> torch.Tensor:
        if kind == "motion_video":
            out = render_motion_video(x["joints"], x["points"], x["K"], x["R"], x["T"],
                                      height, width)
        else:
            out = render_rgb(x["joints"], x["surfels"], x["normals"], x["surfel_rgb"],
                             x["skin_rgb"], x["table_rgb"], x["wall_rgb"], x["table_pattern"],
                             x["K"], x["R"], x["T"], height, width)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out
    return call


@benchmark("render", "motion video and RGB frames/s (hoi.render)", _render_arguments)
def render(args: argparse.Namespace) -> Rows:
    """Frames/s of both renderers on batches of synthetic clips (renderer, B, N, H, W)."""
    cases = [("motion_video", 1, 49, 416, 624), ("motion_video", 2, 49, 416, 624),
             ("motion_video", 4, 49, 416, 624), ("rgb", 4, 49, 64, 96), ("rgb", 1, 9, 416, 624)]
    rows = []
    for kind, batch, frames, height, width in cases:
        x = {k: v.to(args.device) for k, v in _clips(batch, frames, height, width).items()}
        seconds = timed(_renderer(kind, x, height, width), args.repeats)
        rows.append({"renderer": kind, "device": args.device, "B": batch, "N": frames,
                     "H": height, "W": width, "surfels": x["surfels"].shape[2],
                     "seconds": round(seconds, 4),
                     "frames_per_s": round(batch * frames / seconds, 1)})
    return rows
