"""The prepare benchmark: clips per second of jobs/prepare.py's pipeline (`hoi.data.prepare`)."""

from __future__ import annotations

import argparse
import time

from benchmarks.harness import Rows, benchmark
from hoi.data.synthetic import generate_clip


def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=16, help="clips per flavour")


@benchmark("prepare", "synthetic clips/s of the prepare pipeline (hoi.data.prepare)",
           _prepare_arguments)
def prepare(args: argparse.Namespace) -> Rows:
    """Per flavour: one clip's stages in this process (generate, render, encode), then the
    whole Ray Data job (local Ray over all cores) end to end, manifest and shards included."""
    import tempfile

    import ray

    from cluster.runtime import init_ray
    from hoi.config import load_config
    from hoi.data.prepare import render_synthetic, run
    from hoi.data.schema import clip_to_row
    from hoi.data.synthetic import clip_seed

    rows = []
    init_ray(load_config().ray)
    for flavour, encoding in (("svimo-small", "raw"), ("svimo-5b", "mp4")):
        cfg = load_config(flavour=flavour)
        stages = {}
        start = time.perf_counter()
        clip, look = generate_clip(clip_seed(0, "train", 0), cfg.data)
        stages["generate_s"] = time.perf_counter() - start
        start = time.perf_counter()
        render_synthetic([clip], [look], cfg.data)
        stages["render_s"] = time.perf_counter() - start
        start = time.perf_counter()
        clip_to_row(clip, encoding)
        stages["encode_s"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(flavour=flavour, overrides=[
                "--prepare.output", out, "--prepare.num_train", str(args.clips),
                "--prepare.num_val", "0", "--prepare.clips_per_shard", "2",
                "--prepare.num_preview", "0", "--prepare.video_encoding", encoding])
            manifest = run(cfg, progress=False)
        rows.append({"flavour": flavour, "H x W x N": f"{cfg.data.height} x {cfg.data.width} x {cfg.data.num_frames}",
                     "encoding": encoding, "clips": args.clips,
                     **{k: round(v, 3) for k, v in stages.items()},
                     "job_s": manifest["seconds"], "job_clips_per_s": manifest["clips_per_second"],
                     "MB_per_clip": round(manifest["splits"]["train"]["bytes"] / args.clips / 1e6, 3)})
    ray.shutdown()
    return rows
