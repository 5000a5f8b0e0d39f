"""A full-width rehearsal of the svimo-5b GPU run, on CPUs.

svimo-5b at the paper's width (hidden 3072 = 48 heads x 64, T5 width 4096, 226 text tokens,
the learned positional table, VID at its 5B sizes) with its depth and frames cut so that it
runs in minutes on 2 cores, through the code paths the GPU run takes: `jobs/train.py`'s fit
on Ray Train with DeepSpeed ZeRO-3 on 2 ranks (gloo), bf16, gradient checkpointing, two
resolution stages, a stop at the stage boundary (its checkpoint) and a resume across it,
then `SViMoPipeline` sampling a few steps from the exported weights. What it checks is that
these work together at the real widths, not speed; it records time and peak memory.

    python benchmarks/run.py rehearsal [--layers 2] [--json out.json]

This module registers it as the benchmark `rehearsal` (below); the slow test
tests/test_rehearsal.py runs it too.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Rows, benchmark
from hoi.config import Config, StorageConfig, load_config
from hoi.data.synthetic import generate_clip

# The codec, data, pipeline and training imports (transformers, diffusers, av, Ray) are inside
# the functions that use them: every benchmark's process imports this module to register it.

STAGES = [[32, 48, 1], [64, 96, 1]]
"""Two resolution stages of one step (the first is VID's warm-up, the second a joint step);
the data is prepared at the last one's size."""
FRAMES = 9
"""Frames per clip (3 latent frames), for the paper's 49."""
CLIPS = 4


def rehearsal_overrides(root: str, layers: int) -> list[str]:
    """svimo-5b cut to `layers` blocks and FRAMES frames at STAGES' sizes, on 2 gloo ranks
    of 0.5 CPU each, bf16 and ZeRO-3 as on GPUs; inputs and runs under `root`."""
    height, width, _ = STAGES[-1]
    return [
        "--flavour", "svimo-5b", "--model.num_layers", str(layers),
        "--data.num_frames", str(FRAMES), "--data.height", str(height),
        "--data.width", str(width), "--prepare.video_encoding", "raw",
        "--loop.vid_warmup_steps", "1",
        "--train.stages", str(STAGES), "--train.steps", str(sum(s[2] for s in STAGES)),
        "--train.use_gpu", "false", "--train.precision", "bf16", "--train.zero_stage", "3",
        "--train.num_workers", "2", "--train.cpus_per_worker", "0.5",
        "--train.batch_size", "1", "--train.encode_gpus", "0", "--train.encode_cpus", "0.5",
        "--train.checkpoint_every", str(STAGES[0][2]), "--train.log_every", "1",
        "--train.warmup_steps", "1",
        "--train.shards", f"{root}/shards", "--train.storage_path", f"{root}/runs",
        "--train.run_name", "rehearsal",
        "--codec.vae_channels", "[8, 8, 8, 8]", "--codec.text_layers", "1",
        "--encoders.vae", f"{root}/codec/vae", "--encoders.tokenizer", f"{root}/codec/tokenizer",
        "--encoders.text_encoder", f"{root}/codec/text_encoder",
    ]


def write_inputs(cfg: Config) -> None:
    """CLIPS synthetic clips rendered at the config's size in two shards, and a random codec
    of the config's widths (a T5 of width 4096 with one layer; nothing is downloaded)."""
    from hoi.codec.job import save_pretrained as save_codec_part
    from hoi.codec.text import build_text_encoder, build_tokenizer, prompt_vocabulary
    from hoi.codec.vae import build_vae
    from hoi.data.prepare import render_synthetic
    from hoi.data.schema import clip_to_row
    from hoi.data.shards import shard_path, write_shard

    storage = StorageConfig()
    made = [generate_clip(seed, cfg.data, "train", f"train-{seed}") for seed in range(CLIPS)]
    clips = [clip for clip, _ in made]
    render_synthetic(clips, [look for _, look in made], cfg.data)
    half = CLIPS // 2
    for index, part in enumerate((clips[:half], clips[half:])):
        write_shard([clip_to_row(c) for c in part], shard_path(cfg.train.shards, "train", index),
                    storage)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(prompt_vocabulary(), cfg.model.max_text_tokens)
    save_codec_part(build_vae(cfg), cfg.encoders.vae, storage)
    save_codec_part(tokenizer, cfg.encoders.tokenizer, storage)
    save_codec_part(build_text_encoder(cfg, len(tokenizer)), cfg.encoders.text_encoder, storage)


def _peak_gb() -> float:
    """This process's peak resident memory so far (ru_maxrss: kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rehearse(root: str | Path, layers: int = 2, sample_steps: int = 2) -> dict:
    """Run the rehearsal under `root` (Ray must be initialised with at least 2 CPUs); returns
    what it measured and what the checks need: each phase's seconds, the train workers' peak
    host memory, the runs' final metrics, the exported model's directory and a sample."""
    from hoi.pipeline import SViMoPipeline
    from hoi.train.job import exported_model, fit

    root = str(Path(root).absolute())
    overrides = rehearsal_overrides(root, layers)
    cfg = load_config(overrides=overrides)
    figures: dict = {"layers": layers, "hidden": cfg.model.hidden_size,
                     "text_width": cfg.model.text_embed_dim,
                     "sequence": [cfg.at_size(h, w).sequence_length for h, w, _ in STAGES]}
    began = time.perf_counter()
    write_inputs(cfg)
    figures["inputs_s"] = time.perf_counter() - began
    # 1. stage 1, stopped at its last step (the boundary's checkpoint), 2. resumed into stage 2
    began = time.perf_counter()
    stopped = fit(load_config(overrides=[*overrides, "--train.stop_at_step",
                                         str(STAGES[0][2])]))
    figures["stage1_s"] = time.perf_counter() - began
    began = time.perf_counter()
    resumed = fit(cfg)
    figures["stage2_s"] = time.perf_counter() - began
    figures["stopped"], figures["resumed"] = stopped.metrics, resumed.metrics
    figures["model"] = exported_model(cfg, resumed)
    # 3. sampling from the exported weights
    began = time.perf_counter()
    pipe = SViMoPipeline.from_pretrained(figures["model"], dtype=torch.bfloat16)
    image = (np.random.default_rng(0).random((*pipe.frame_size[1:], 3)) * 255).astype(np.uint8)
    figures["sample"] = pipe(image, "stir the bowl with the spoon", num_steps=sample_steps,
                             seed=0)
    figures["sample_s"] = time.perf_counter() - began
    figures["parameters"] = sum(p.numel() for p in pipe.svimo.parameters())
    figures["driver_peak_gb"] = _peak_gb()
    return figures


def rows(figures: dict) -> list[dict]:
    """The benchmark's table: time and peak memory of each phase."""
    def train_row(name: str, metrics: dict, seconds: float) -> dict:
        return {"phase": name, "s": round(seconds, 1),
                "step_s": round(metrics["step_seconds"], 2),
                "worker_peak_gb": round(metrics["peak_host_gb"], 2),
                "loss": round(metrics["total"], 4)}

    return [
        {"phase": f"inputs: {CLIPS} clips, a codec with a T5 of width {figures['text_width']}",
         "s": round(figures["inputs_s"], 1)},
        train_row(f"stage 1 {STAGES[0][0]}x{STAGES[0][1]}, stopped at its boundary",
                  figures["stopped"], figures["stage1_s"]),
        train_row(f"stage 2 {STAGES[1][0]}x{STAGES[1][1]}, resumed", figures["resumed"],
                  figures["stage2_s"]),
        {"phase": f"sample {figures['sample'].num_steps} steps (bf16)",
         "s": round(figures["sample_s"], 1)},
        {"phase": f"(SViMo {figures['parameters'] / 1e6:.0f} M parameters, {figures['layers']} "
                  f"blocks of width {figures['hidden']}; sequences {figures['sequence']}; "
                  f"driver peak {figures['driver_peak_gb']:.2f} GB)"},
    ]


def _rehearsal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=2, help="SViMo blocks (42 in svimo-5b)")
    parser.add_argument("--out", default="outputs/rehearsal", help="inputs and runs go here")


@benchmark("rehearsal", "svimo-5b at full width on CPUs: ZeRO-3 bf16 on 2 ranks, two stages, "
           "a resume across their boundary, sampling (time, peak memory)", _rehearsal_arguments)
def rehearsal(args: argparse.Namespace) -> Rows:
    """`rehearse` (above) on a fresh local Ray over this machine's CPUs."""
    import shutil

    import ray

    shutil.rmtree(args.out, ignore_errors=True)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    try:
        return rows(rehearse(args.out, layers=args.layers))
    finally:
        ray.shutdown()
