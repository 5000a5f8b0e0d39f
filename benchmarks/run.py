"""The benchmarks' single entry point: ``python benchmarks/run.py <name> [--json out.json]``.

Each benchmark is a function registered under a name with `@benchmark(...)`; it becomes a
subcommand, prints a table and, with ``--json``, writes its rows together with the exact
command and the machine it ran on. Record the figures in ``docs/benchmarks.md``.

Add one: write ``@benchmark("name", "what it measures") def name(args) -> list[dict]`` below,
in its own section; options of its own go in an ``add_arguments(parser)`` passed to the
decorator.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from hoi.config import DataConfig  # noqa: E402
from hoi.data.synthetic import generate_clip  # noqa: E402
from hoi.render.motion_video import render_motion_video  # noqa: E402
from hoi.render.rgb import render_rgb  # noqa: E402

Rows = list[dict]
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], Rows],
                            Callable[[argparse.ArgumentParser], None] | None]] = {}


def benchmark(name: str, help: str, add_arguments=None):
    """Register `fn(args) -> rows` as the subcommand `name`."""
    def register(fn: Callable[[argparse.Namespace], Rows]):
        BENCHMARKS[name] = (help, fn, add_arguments)
        return fn
    return register


def machine() -> dict:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# render: motion video and RGB frames per second
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# prepare: clips per second of jobs/prepare.py's pipeline
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# model: cost of a sampling step and of a training step; FLOPs of svimo-5b
# ---------------------------------------------------------------------------------------------


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flavour", default="svimo-small", help="size preset to time")
    parser.add_argument("--batch", type=int, default=4, help="clips per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")


@benchmark("model", "sampling/training step cost breakdown and svimo-5b FLOPs (hoi.model)",
           _model_arguments)
def model(args: argparse.Namespace) -> Rows:
    """Seconds of each stage of one closed-loop sampling step (batch 1) and of one training
    step (forward + backward, --batch clips), on random weights of the flavour's sizes (a
    step costs the same whatever the weights); then analytic FLOPs of svimo-5b."""
    from hoi.config import load_config
    from hoi.diffusion.closed_loop import ClosedLoop
    from hoi.diffusion.conditions import TrainBatch, image_condition, render_guidance
    from hoi.diffusion.schedule import Schedule, step
    from hoi.model.encoders import VideoVAE
    from hoi.model.flops import svimo_forward_flops, training_step_flops, vid_forward_flops
    from hoi.model.svimo import SViMo
    from hoi.model.vid import VID
    from hoi.train.codec import build_vae

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


# ---------------------------------------------------------------------------------------------
# Training: ingest rate, data wait, 1 vs 2 workers
# ---------------------------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/default.yaml",
                        help="run file: shards and encoders (made by scripts/main.sh)")
    parser.add_argument("--steps", type=int, default=30,
                        help="steps per run; the last --window steps are measured")
    parser.add_argument("--window", type=int, default=10, help="steps of the measured window")
    parser.add_argument("--ingest-batches", type=int, default=12,
                        help="batches the pipeline alone delivers (after the first)")


@benchmark("train", "Ray Data ingest vs consumption, data wait, 1 vs 2 Ray Train workers",
           _train_arguments)
def train(args: argparse.Namespace) -> Rows:
    """1. `jobs/train.py`'s fit with 1 and 2 workers (0.5 CPU each for 2): the last window's
    samples/s, seconds per step and data-wait fraction. 2. The stage-0 pipeline alone (read,
    decode, encode), drained by one consumer: clips/s it delivers after its first batch."""
    import tempfile

    import ray

    from hoi.config import load_config
    from hoi.train.data import stage_dataset
    from hoi.train.job import absolute_paths, fit, preflight

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows: Rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as storage:
            run = load_config(args.config, [
                "--train.num_workers", str(workers), "--train.cpus_per_worker",
                "1.0" if workers == 1 else "0.5", "--train.steps", str(args.steps),
                "--train.log_every", str(args.window), "--train.checkpoint_every",
                str(args.steps), "--train.storage_path", storage])
            metrics = fit(run).metrics
        rows.append({"run": f"train: {workers} worker(s), batch {run.train.batch_size} each",
                     "samples_per_s": round(metrics["samples_per_s"], 2),
                     "steps_per_s": round(1 / metrics["step_seconds"], 3),
                     "data_wait": f"{100 * metrics['data_wait']:.0f}%",
                     "model_gflops_per_s": round(1e3 * metrics["tflops"], 1)})
    # last: a pipeline drained alone keeps its encoder actor (CPUs) while its iterator lives
    cfg = absolute_paths(load_config(args.config))
    checked = preflight(cfg)
    it = iter(stage_dataset(cfg, checked.shards, 0).iter_torch_batches(
        batch_size=cfg.train.batch_size))
    next(it)  # the pipeline's start (actor, encoders) is not its rate
    start = time.perf_counter()
    for _ in range(args.ingest_batches):
        next(it)
    seconds = time.perf_counter() - start
    rows.append({"run": "ingest: pipeline alone, 1 encoder",
                 "samples_per_s": round(args.ingest_batches * cfg.train.batch_size / seconds, 2)})
    ray.shutdown()
    return rows


def _rehearsal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=2, help="SViMo blocks (42 in svimo-5b)")
    parser.add_argument("--out", default="outputs/rehearsal", help="inputs and runs go here")


@benchmark("rehearsal", "svimo-5b at full width on CPUs: ZeRO-3 bf16 on 2 ranks, two stages, "
           "a resume across their boundary, sampling (time, peak memory)", _rehearsal_arguments)
def rehearsal(args: argparse.Namespace) -> Rows:
    """`benchmarks/rehearsal.py` on a fresh local Ray over this machine's CPUs."""
    import shutil

    import ray

    from benchmarks.rehearsal import rehearse
    from benchmarks.rehearsal import rows as rehearsal_rows

    shutil.rmtree(args.out, ignore_errors=True)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    try:
        return rehearsal_rows(rehearse(args.out, layers=args.layers))
    finally:
        ray.shutdown()


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


# ---------------------------------------------------------------------------------------------
# Serving: the svimo Serve app under concurrent HTTP clients, 1 vs 2 sampler replicas
# ---------------------------------------------------------------------------------------------



def _png(seed: int, height: int = 64, width: int = 96) -> bytes:
    """A random RGB reference image as PNG bytes."""
    import io

    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generations", type=int, default=24, help="generations per run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per generation")
    parser.add_argument("--replica-cpus", type=float, default=0.5,
                        help="CPUs reserved by each sampler replica")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between status polls")


def _client_load(url: str, args: argparse.Namespace) -> dict:
    """`args.clients` threads share `args.generations` submissions; each submits one, polls its
    status every `args.poll` s until done or failed, then submits the next. Returns the
    latencies (s) of submit calls, status calls and completions (submit -> seen done), the
    HTTP codes that were not 2xx, and the jobs that failed or never finished."""
    import itertools
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    counter, lock = itertools.count(), threading.Lock()
    out: dict = {"submit": [], "status": [], "done": [], "codes": {}, "failed": [],
                 "lost": [], "first": None, "last": None}

    def record(key: str, value) -> None:
        with lock:
            out[key].append(value)

    def bad(code: int) -> None:
        with lock:
            out["codes"][code] = out["codes"].get(code, 0) + 1

    def client(_: int) -> None:
        http = requests.Session()
        while (i := next(counter)) < args.generations:
            image = _png(i)
            while True:  # a full queue answers 429 + Retry-After: come back then
                start = time.perf_counter()
                with lock:
                    out["first"] = out["first"] or start
                r = http.post(f"{url}/v1/generations",
                              data={"prompt": "stir the bowl with the spoon",
                                    "num_steps": str(args.steps), "seed": str(i)},
                              files={"image": ("ref.png", image, "image/png")}, timeout=60)
                record("submit", time.perf_counter() - start)
                if r.status_code == 202:
                    break
                bad(r.status_code)
                if r.status_code not in (429, 503):
                    record("failed", f"submit {i}: {r.status_code} {r.text[:200]}")
                    break
                time.sleep(float(r.headers.get("Retry-After", 1)))
            if r.status_code != 202:
                continue
            job_id, submitted = r.json()["id"], start
            deadline = time.perf_counter() + 300
            while True:
                time.sleep(args.poll)
                t = time.perf_counter()
                s = http.get(f"{url}/v1/generations/{job_id}", timeout=60)
                record("status", time.perf_counter() - t)
                if s.status_code != 200:
                    bad(s.status_code)
                    if time.perf_counter() > deadline:
                        record("lost", job_id)
                        break
                    continue
                state = s.json()
                if state["status"] in ("done", "failed"):
                    now = time.perf_counter()
                    with lock:
                        out["last"] = max(out["last"] or now, now)
                    if state["status"] == "done":
                        record("done", now - submitted)
                    else:
                        record("failed", f"{job_id}: {state['error']}")
                    break
                if time.perf_counter() > deadline:
                    record("lost", job_id)
                    break

    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    return out


@benchmark("serve", "svimo Serve app over HTTP: throughput and latencies, 1 vs 2 replicas",
           _serve_arguments)
def serve_app(args: argparse.Namespace) -> Rows:
    """Per sampler replica count R (min = max = R, `--replica-cpus` each) on a 2-CPU local
    Ray: start Serve and the app (svimo-tiny, random weights), run one warm-up generation per
    replica, then `--clients` HTTP clients share `--generations` generations of `--steps`
    steps. Throughput is from the first submit to the last completion; completion latency is
    submit -> the first status poll that sees done (so up to `--poll` s late)."""
    import logging
    import tempfile

    import ray
    import requests
    from ray import serve

    from cluster.local import free_port
    from hoi.config import StorageConfig, load_config
    from serve.app import build_app
    from serve.health import wait_healthy
    from tests.train.inputs import write_tiny_model

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    rows: Rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as root:
        model = write_tiny_model(f"{root}/tiny", StorageConfig())
        for replicas in (1, 2):
            cfg = load_config(flavour="svimo-tiny", overrides=[
                "--serve.model", model, "--serve.results", f"{root}/results-{replicas}",
                "--serve.min_replicas", str(replicas), "--serve.max_replicas", str(replicas),
                "--serve.replica_cpus", str(args.replica_cpus),
                "--serve.max_queued", str(max(args.generations, args.clients)),
                "--sample.num_steps", str(args.steps)])
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            start = time.perf_counter()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app(cfg), name="svimo", route_prefix="/")
            wait_healthy(url, timeout_s=120)
            start_s = time.perf_counter() - start
            warm = argparse.Namespace(**{**vars(args), "generations": replicas,
                                         "clients": replicas})
            _client_load(url, warm)  # first calls of each replica (lazy init, thread pools)
            load = _client_load(url, args)
            health = requests.get(f"{url}/healthz", timeout=10).json()
            serve.delete("svimo")
            serve.shutdown()
            seconds = (load["last"] or time.perf_counter()) - load["first"]
            ms = lambda xs, q: round(1e3 * _percentile(xs, q), 1)  # noqa: E731
            rows.append({
                "replicas": replicas, "clients": args.clients,
                "generations": args.generations, "steps": args.steps,
                "start_s": round(start_s, 1),
                "gen_per_min": round(60 * len(load["done"]) / seconds, 1),
                "submit_p50_ms": ms(load["submit"], 50), "submit_p95_ms": ms(load["submit"], 95),
                "status_p50_ms": ms(load["status"], 50), "status_p95_ms": ms(load["status"], 95),
                "status_calls": len(load["status"]),
                "done_p50_s": round(_percentile(load["done"], 50), 2),
                "done_p95_s": round(_percentile(load["done"], 95), 2),
                "done": len(load["done"]), "failed": len(load["failed"]),
                "lost": len(load["lost"]),
                "non_2xx": ", ".join(f"{c} x{n}" for c, n in sorted(load["codes"].items()))
                or "none",
                "left_queued_running": f"{health['queued']}/{health['running']}"})
            for problem in load["failed"] + load["lost"]:
                print(f"serve R={replicas}: {problem}", file=sys.stderr)
    ray.shutdown()
    return rows


# ---------------------------------------------------------------------------------------------
# Batch sampling: a plain loop vs hoi.sampling.run (Ray Data) with 1 and 2 sampler actors
# ---------------------------------------------------------------------------------------------


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=12, help="requests per run")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per sample")
    parser.add_argument("--default-threads-samples", type=int, default=4,
                        help="requests (the first ones) of the plain loop with torch's default "
                             "threads, which can be very slow on a loaded machine")


def _done_times(output: str) -> list[float]:
    """Wall-clock times (time.time) at which each <output>/<id>/result.json was written: a
    sample is complete when its result.json exists (hoi.outputs)."""
    from hoi.outputs import RESULT_NAME

    return sorted(p.stat().st_mtime for p in Path(output).glob(f"*/{RESULT_NAME}"))


def _sample_row(run: str, n: int, began: float, first_started: float, finished: float,
                ok: int) -> dict:
    """began: the run's start; first_started: when its first sample's own work began (after
    model loading and start-up); finished: the last sample's result.json."""
    return {"run": run, "samples": n, "ok": ok, "total_s": round(finished - began, 1),
            "startup_s": round(first_started - began, 1),
            "samples_per_s": round(n / (finished - began), 3),
            "samples_per_s_after_startup": round(n / (finished - first_started), 3)}


@benchmark("sample", "batch sampling: plain loop vs hoi.sampling.run with 1 and 2 actors",
           _sample_arguments)
def sample(args: argparse.Namespace) -> Rows:
    """The same `--samples` requests (svimo-tiny, random weights, `--steps` steps, one PNG
    each) sampled (a) in this process, with 1 torch thread and with torch's default (the first
    `--default-threads-samples` requests only): `SViMoPipeline.from_pretrained`, then pipe(...) + write_generation per request; (b) by `hoi.sampling.run` on a 2-CPU local Ray with
    sample.concurrency 1 (1 CPU) and 2 (0.5 CPU each). Start-up is everything before the
    first sample's own work began (model loading; for Ray Data also reading the requests and
    starting the actors; not ray.init); a sample's own time is its manifest `seconds`. The
    loop's rows split a sample into pipe(...) (generate_s) and write_generation (write_s)."""
    import logging
    import tempfile

    import ray

    from hoi.config import StorageConfig, load_config
    from hoi.outputs import write_generation
    from hoi.pipeline import SViMoPipeline
    from hoi.sampling import MANIFEST_NAME, run
    from tests.train.inputs import write_tiny_model

    rows: Rows = []
    storage = StorageConfig()
    prompts = ["stir the bowl with the spoon", "pour the cup into the bowl",
               "cut the apple with the knife", "brush the plate with the brush"]
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as root:
        model = write_tiny_model(f"{root}/tiny", storage)
        requests = []
        for i in range(args.samples):
            Path(f"{root}/in").mkdir(exist_ok=True)
            Path(f"{root}/in/{i}.png").write_bytes(_png(i))
            requests.append({"id": f"r{i:03d}", "image": f"{i}.png",
                             "prompt": prompts[i % len(prompts)], "seed": i,
                             "num_steps": args.steps})
        Path(f"{root}/in/requests.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in requests))

        # (a) one process, no Ray: with 1 torch thread (as Ray gives each actor) and with
        # torch's default (one per core), which suffers most when other jobs hold the cores
        default_threads = torch.get_num_threads()
        for threads in dict.fromkeys((1, default_threads)):
            torch.set_num_threads(threads)
            output = f"{root}/loop-{threads}"
            n = args.samples if threads == 1 else min(args.samples, args.default_threads_samples)
            began = time.time()
            pipe = SViMoPipeline.from_pretrained(model, storage)
            loaded = time.time()
            split = {"generate_s": 0.0, "write_s": 0.0}
            for r in requests[:n]:
                start = time.perf_counter()
                gen = pipe(Path(f"{root}/in/{r['image']}").read_bytes(), r["prompt"],
                           num_steps=r["num_steps"], seed=r["seed"])
                split["generate_s"] += time.perf_counter() - start
                start = time.perf_counter()
                write_generation(gen, f"{output}/{r['id']}", storage, extra={"id": r["id"]})
                split["write_s"] += time.perf_counter() - start
            finished = max(_done_times(output))
            rows.append({**_sample_row(f"plain loop, {threads} torch thread(s)", n, began,
                                       loaded, finished, len(_done_times(output))),
                         "per_sample_s": round((finished - loaded) / n, 2),
                         **{k: round(v / n, 2) for k, v in split.items()}})
            del pipe
        torch.set_num_threads(default_threads)

        # (b) hoi.sampling.run through Ray Data
        start = time.time()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows.append({"run": "ray.init (not in the rows below)",
                     "total_s": round(time.time() - start, 1)})
        for concurrency, cpus in ((1, 1.0), (2, 0.5)):
            output = f"{root}/ray-{concurrency}"
            cfg = load_config(flavour="svimo-tiny", overrides=[
                "--sample.model", model, "--sample.input", f"{root}/in/requests.jsonl",
                "--sample.output", output, "--sample.concurrency", str(concurrency),
                "--sample.cpus_per_actor", str(cpus), "--sample.num_steps",
                str(max(args.steps, 1))])
            began = time.time()
            summary = run(cfg)
            manifest = [json.loads(line) for line in
                        Path(output, MANIFEST_NAME).read_text().splitlines()]
            times = {e["id"]: Path(output, e["id"], "result.json").stat().st_mtime
                     for e in manifest if e["status"] == "ok"}
            first = min(times, key=times.get)
            seconds = {e["id"]: e["seconds"] for e in manifest if e["status"] == "ok"}
            first_started = times[first] - seconds[first]
            rows.append({**_sample_row(
                f"hoi.sampling.run, {concurrency} actor(s) x {cpus} CPU", args.samples, began,
                first_started, max(_done_times(output)), summary["ok"]),
                "per_sample_s": round(statistics.median(seconds.values()), 2)})
        ray.shutdown()
    return rows


def print_table(rows: Rows) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="name", required=True)
    for name, (help, _, add_arguments) in BENCHMARKS.items():
        child = sub.add_parser(name, help=help)
        child.add_argument("--json", type=Path, help="write the results here")
        if add_arguments:
            add_arguments(child)
    args = parser.parse_args(argv)
    rows = BENCHMARKS[args.name][1](args)
    print_table(rows)
    if args.json:
        command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": args.name, "command": command,
                                         "machine": machine(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
