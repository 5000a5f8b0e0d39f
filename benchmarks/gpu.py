"""What a svimo-5b run costs on one GPU, measured at the paper's width, without Ray.

    python benchmarks/gpu.py [--json out.json]                     # svimo-5b on cuda, bf16
    python benchmarks/gpu.py --flavour svimo-tiny --device cpu --dtype float32 --vae codec

1. **attention**: the joint attention at the flavour's sequence (26,590 tokens, 48 heads of
   64 for svimo-5b), forward and forward + backward, per backend: PyTorch SDPA pinned to its
   flash, cuDNN, memory-efficient and math kernels, and flash-attn when installed. A backend
   this device lacks is a row saying why. FLOPs: 4 L^2 d per head forward, 2.5x that backward
   (FlashAttention's convention); math only below 8,192 tokens (its L^2 scores do not fit).
2. **block**: one SViMo block (joint attention + feed-forward, tri-modal modulation), forward
   + backward without recompute: TFLOP/s of the model FLOPs (`hoi.model.flops`, 3x forward)
   and MFU against the GPU's bf16 peak.
3. **train**: a training step as a train worker runs it: svimo-5b cut to `--train-layers`
   blocks (gradient checkpointing on), one clip at the full size, DeepSpeed ZeRO-3 in bf16
   built by `hoi.train.engine` (SViMo under `zero.Init`), metered by `hoi.train.meter`, all
   under a real process group of size 1: NCCL on a GPU, whose all-reduce takes CUDA tensors
   only. Seconds, TFLOP/s and MFU by the meter, host syncs in one step (CUDA's sync debug
   mode), peak memory.
4. **sampling**: each part of one closed-loop sampling step at the full size, timed alone:
   the DiT with 1 and 2 blocks (the difference is one block; extrapolated to the flavour's
   depth; with classifier-free guidance on a batch of 2), VID, Proj, the VAE's encode of the
   guidance (CogVideoX-5B's published VAE config, random weights) and its decode once per
   sample; then 50 steps, next to CogVideoX-5B's ~90 s for 50 steps at 17,776 tokens on one
   H100, scaled by the FLOPs ratio of the two models. Peak memory of each.
5. **memory**: bytes per GPU of ZeRO-3 training at micro-batch 1-4 on 8 and 16 GPUs: model
   states (bf16 weights and gradients, fp32 master weights and Adam moments, 16 bytes a
   parameter, sharded) + activations measured as the bytes autograd saves: with gradient
   checkpointing each block keeps its input, and the block being recomputed keeps all of
   its own (measured here at micro-batch 1, linear in the micro-batch). Then LoRA at ranks
   16, 64 and 128 (micro-batch 1): 16 bytes per trained parameter (adapters, the motion
   stream, VID), 2 per frozen one (its bf16 weight), the same activations.

A part that fails is a row with its error, and the others still run; with --json the file is
rewritten after each part, so what was measured survives a timeout. On the GPU machine of the
device tool the whole check is one command, `bash benchmarks/gpu.sh` (see there).
Every part runs at any size on any device (tests/test_gpu_benchmark.py runs them all at
svimo-tiny on the CPU); record figures with the device name in docs/benchmarks.md ("GPU").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

_HERE = Path(__file__).resolve().parent
# run from a checkout: the repository root first, and benchmarks/ itself (sys.path[0] when run
# as a script) not at all, so that its modules are only ever benchmarks.<name> (train, model...)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.harness import machine, print_table  # noqa: E402
from cluster.local import free_port  # noqa: E402
from hoi.config import Config, load_config  # noqa: E402
from hoi.diffusion.conditions import TrainBatch, image_condition  # noqa: E402
from hoi.geometry.motion import NUM_ENTITIES, denormalize, unpack  # noqa: E402
from hoi.model.attention import flash_available  # noqa: E402
from hoi.model.encoders import VideoVAE  # noqa: E402
from hoi.model.flops import svimo_forward_flops  # noqa: E402
from hoi.model.svimo import SViMo  # noqa: E402
from hoi.model.vid import VID  # noqa: E402
from hoi.render.motion_video import render_motion_video  # noqa: E402
from hoi.train.engine import TrainSystem, build_engine, build_models  # noqa: E402
from hoi.train.lora import add_lora  # noqa: E402
from hoi.train.meter import Meter, peak_tflops  # noqa: E402

Rows = list[dict]
ANCHOR_SECONDS, ANCHOR_HEIGHT, ANCHOR_WIDTH = 90.0, 480, 720
"""CogVideoX-5B: about 90 s for 50 steps (with CFG) at 480 x 720 x 49 (17,776 tokens) on one
H100 (the diffusers model card's figure)."""
SDPA_KERNELS = {"sdpa flash": SDPBackend.FLASH_ATTENTION, "sdpa cudnn": SDPBackend.CUDNN_ATTENTION,
                "sdpa efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa math": SDPBackend.MATH}
MATH_MAX_TOKENS = 8192
BYTES_PER_PARAMETER_ZERO = 16
"""Mixed-precision Adam: bf16 weights (2) and gradients (2), fp32 master weights (4) and the
two moments (8); ZeRO-3 shards all of it."""


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up, synchronising the device."""
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def _sig(x: float) -> float:
    """Three significant digits."""
    return float(f"{x:.3g}")


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__


# ---------------------------------------------------------------------------------------------
# 1. attention
# ---------------------------------------------------------------------------------------------


def attention_rows(cfg: Config, device: torch.device, dtype: torch.dtype, repeats: int) -> Rows:
    m = cfg.model
    length = cfg.sequence_length
    shape = (1, m.num_heads, length, m.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    forward_flops = 4.0 * length * length * m.num_heads * m.head_dim
    kernels: dict[str, Callable[[], torch.Tensor]] = {}
    for name, kernel in SDPA_KERNELS.items():
        if kernel == SDPBackend.MATH and length > MATH_MAX_TOKENS:
            continue

        def run(kernel=kernel) -> torch.Tensor:
            with sdpa_kernel(kernel):
                return F.scaled_dot_product_attention(q, k, v)
        kernels[name] = run
    if flash_available():
        from flash_attn import flash_attn_func

        kernels["flash-attn"] = lambda: flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    rows = []
    for name, run in kernels.items():
        row = {"what": f"attention, {name}", "tokens": length, "dtype": str(dtype)[6:]}
        try:
            with torch.no_grad():
                forward = timed(run, device, repeats)
            both = timed(lambda run=run: run().sum().backward(), device, repeats)
        except (RuntimeError, NotImplementedError) as e:  # a kernel this device lacks
            rows.append(row | {"error": _error(e)})
            continue
        rows.append(row | {"fwd ms": _sig(1e3 * forward),
                           "fwd TFLOP/s": _sig(forward_flops / forward / 1e12),
                           "fwd+bwd ms": _sig(1e3 * both),
                           "fwd+bwd TFLOP/s": _sig(3.5 * forward_flops / both / 1e12)})
    return rows


# ---------------------------------------------------------------------------------------------
# 2. one block, forward + backward
# ---------------------------------------------------------------------------------------------


def _depth(cfg: Config, layers: int) -> Config:
    return load_config(flavour=cfg.flavour, overrides=[
        "--model.num_layers", str(layers), "--model.gradient_checkpointing", "false",
        "--vid.gradient_checkpointing", "false",
        "--model.attention_backend", cfg.model.attention_backend])


def _block_inputs(cfg: Config, device: torch.device, dtype: torch.dtype, batch: int = 1
                  ) -> tuple[SViMo, tuple]:
    """A one-block SViMo and the inputs of its block: text, video, motion, temb, rope."""
    model = SViMo(_depth(cfg, 1)).to(device=device, dtype=dtype)
    m = cfg.model
    frames, rows, cols = cfg.token_grid
    tokens = lambda n: torch.randn(batch, n, m.hidden_size, device=device,  # noqa: E731
                                   dtype=dtype, requires_grad=True)
    # motion tokens repeat the video's positions, as in SViMo.forward
    rope = model.rotary_embedding(frames, rows, cols, device, streams=2)
    temb = torch.randn(batch, m.time_embed_dim, device=device, dtype=dtype)
    return model, (tokens(m.max_text_tokens), tokens(cfg.tokens_per_stream),
                   tokens(cfg.tokens_per_stream), temb, rope)


def block_flops(cfg: Config) -> float:
    """Forward FLOPs of one block (batch 1): everything but embeddings and output heads."""
    parts = svimo_forward_flops(cfg)
    per_block = (parts["attention_scores"] + parts["attention_projections"]
                 + parts["feed_forward"]) / cfg.model.num_layers
    return per_block + (parts["modulation"] - 2 * _output_modulation(cfg)) / cfg.model.num_layers


def _output_modulation(cfg: Config) -> float:
    return 2.0 * cfg.model.time_embed_dim * 2 * cfg.model.hidden_size


def block_rows(cfg: Config, device: torch.device, dtype: torch.dtype, repeats: int) -> Rows:
    model, inputs = _block_inputs(cfg, device, dtype)
    block = model.transformer_blocks[0]
    prefix = cfg.model.max_text_tokens + cfg.tokens_per_stream \
        if cfg.model.motion_attention_mask else None

    def step() -> None:
        text, video, motion = block(*inputs, prefix)
        (text.sum() + video.sum() + motion.sum()).backward()

    seconds = timed(step, device, repeats)
    flops = 3 * block_flops(cfg)
    achieved = flops / seconds / 1e12
    peak = peak_tflops(cfg, device)
    return [{"what": "one block, fwd + bwd", "tokens": cfg.sequence_length,
             "backend": cfg.model.attention_backend, "ms": _sig(1e3 * seconds),
             "TFLOP/s": _sig(achieved),
             "MFU": f"{100 * achieved / peak:.0f}%" if peak else "n/a (no known peak)"}]


# ---------------------------------------------------------------------------------------------
# 3. a training step: DeepSpeed ZeRO-3 through hoi.train, under a real process group
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """A process group of size 1 while inside, as Ray Train makes one per worker: NCCL on a
    GPU (which reduces CUDA tensors only), gloo on a CPU."""
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                       "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def full_size_batch(cfg: Config, device: torch.device, generator: torch.Generator
                    ) -> TrainBatch:
    """One clip of random encoded data at the config's size (the cost does not depend on
    the values): latents, text features, a normalised motion near the camera's axis."""
    F_, h, w = cfg.latent_shape
    C, m, d = cfg.latent.channels, cfg.model, cfg.data

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device)

    K = torch.tensor([[[d.width, 0.0, d.width / 2], [0.0, d.width, d.height / 2],
                       [0.0, 0.0, 1.0]]], device=device)
    return TrainBatch(video_latent=randn(1, F_, C, h, w), motion_latent=randn(1, F_, C, h, w),
                      image_latent=randn(1, 1, C, h, w),
                      text=randn(1, m.max_text_tokens, m.text_embed_dim),
                      motion=0.3 * randn(1, d.num_frames, NUM_ENTITIES, 3), K=K)


def host_syncs(fn: Callable[[], object], device: torch.device) -> int | str:
    """How many times `fn` makes the host wait for the GPU (CUDA's sync debug mode warns at
    each); n/a on a CPU."""
    if device.type != "cuda":
        return "n/a (CPU)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_rows(cfg: Config, device: torch.device, dtype: torch.dtype, vae_kind: str,
               layers: int, steps: int) -> Rows:
    """One clip per step at the flavour's full size, SViMo cut to `layers` blocks (gradient
    checkpointing as configured), ZeRO-3 in the run's precision, built, stepped and metered
    as a train worker does (`hoi.train.engine`, `hoi.train.meter`); the meter's all-reduce
    runs in the process group."""
    with process_group(device):
        return _train_rows(cfg, device, dtype, vae_kind, layers, steps)


def _train_rows(cfg: Config, device: torch.device, dtype: torch.dtype, vae_kind: str,
                layers: int, steps: int) -> Rows:
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    run = load_config(flavour=cfg.flavour, overrides=[
        "--model.num_layers", str(layers), "--model.attention_backend",
        cfg.model.attention_backend, "--train.zero_stage", "3", "--train.precision", precision,
        "--train.batch_size", "1", "--train.gradient_accumulation", "1"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    vae = _vae(cfg, vae_kind).to(device=device, dtype=dtype)
    generator = torch.Generator(device).manual_seed(0)
    batch = full_size_batch(run, device, generator)
    null_text = torch.zeros_like(batch.text[:1])
    svimo, vid = build_models(run, 1, device)
    engine = build_engine(run, TrainSystem(run, svimo, vid, vae, null_text), 1, device)
    meter = Meter(run, 1, peak_tflops(run, device), device)

    def step() -> None:
        engine.set_gradient_accumulation_boundary(True)
        terms = engine(batch, generator, "joint")
        engine.backward(terms["total"])
        engine.step()
        meter.micro_step(terms)
        meter.step("joint")

    step()  # the first step allocates what the others reuse
    syncs = host_syncs(step, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    meter.restart()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row = meter.report()  # the window's all-reduce, on the training device
    peak = _peak_gb(device)
    return [{"what": f"train step, ZeRO-3 {precision}, {layers} blocks",
             "tokens": run.sequence_length, "backend": dist.get_backend(),
             "s": _sig(row["step_seconds"]), "TFLOP/s": _sig(row["tflops"]),
             "MFU": f"{100 * row['mfu']:.0f}%" if "mfu" in row else "n/a (no known peak)",
             "host syncs/step": syncs, "peak GB": _sig(peak), "loss": _sig(row["total"])}]


def _release(device: torch.device) -> None:
    """Give the memory of what a part built back (its models are gone with its frame)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# 4. a sampling step, part by part, extrapolated
# ---------------------------------------------------------------------------------------------

COGVIDEOX_5B_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, act_fn="silu",
    block_out_channels=(128, 256, 256, 512), layers_per_block=3, norm_num_groups=32,
    norm_eps=1e-6, down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4, temporal_compression_ratio=4,
    sample_height=480, sample_width=720, scaling_factor=0.7, force_upcast=True,
    use_quant_conv=False, use_post_quant_conv=False)
"""CogVideoX-5B's published VAE config (THUDM/CogVideoX-5b, vae/config.json); built with
random weights: a pass costs the same whatever they are."""


def _vae(cfg: Config, kind: str) -> VideoVAE:
    from diffusers import AutoencoderKLCogVideoX

    if kind == "codec":
        from hoi.codec.vae import build_vae

        return VideoVAE(build_vae(cfg))
    vae = AutoencoderKLCogVideoX(**COGVIDEOX_5B_VAE)
    vae.enable_slicing()
    vae.enable_tiling()
    return VideoVAE(vae)


def sampling_rows(cfg: Config, device: torch.device, dtype: torch.dtype, vae_kind: str,
                  repeats: int, guidance: float) -> Rows:
    """Each part of one closed-loop sampling step (algorithm 2) at the flavour's full size,
    timed alone: the DiT with 1 and 2 blocks (their difference is one block, which
    extrapolates it to the flavour's depth; with CFG on a batch of 2), VID (twice a step: for
    the guidance and on the DiT's estimates), Proj and the VAE's encode of the guidance; the
    VAE's decode once per sample. Then 50 steps, next to CogVideoX-5B's ~90 s for 50 steps
    at 17,776 tokens on one H100, scaled by the FLOPs ratio of the two models."""
    vae = _vae(cfg, vae_kind).to(device=device, dtype=dtype)
    generator = torch.Generator(device).manual_seed(0)
    batch = full_size_batch(cfg, device, generator).to(dtype=dtype)
    label = f"CFG {guidance:g}" if guidance > 1 else "no CFG"
    rows: Rows = []

    def part(what: str, fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            seconds = timed(fn, device, repeats)
        rows.append({"what": what, "s": _sig(seconds), "peak GB": _sig(_peak_gb(device))})
        return seconds

    pair = 2 if guidance > 1 else 1
    twice = lambda x: x.expand(pair, *x.shape[1:])  # noqa: E731
    t = torch.full((pair,), 500, device=device)
    image = twice(image_condition(batch.image_latent, cfg.latent_shape[0],
                                  cfg.diffusion.image_latent))
    dit = {}
    for layers in (1, 2):
        torch.manual_seed(0)
        svimo = SViMo(_depth(cfg, layers)).to(device=device, dtype=dtype).eval()
        dit[layers] = part(f"DiT, {layers} block(s), batch {pair} ({label})", lambda svimo=svimo:
                           svimo(twice(batch.video_latent), image, twice(batch.text), t,
                                 twice(batch.motion_latent), twice(batch.motion_latent)))
        del svimo
        _release(device)
    vid = VID(cfg).to(device=device, dtype=dtype).eval()
    vid_s = part("VID", lambda: vid(batch.motion, batch.video_latent, batch.motion_latent,
                                    t[:1], batch.text))
    joints, points = unpack(denormalize(batch.motion.float(), cfg.vid.coord_center,
                                        cfg.vid.coord_scale))
    R, T = torch.eye(3, device=device)[None], torch.zeros(1, 3, device=device)
    d = cfg.data
    proj_s = part("Proj (motion video)", lambda: render_motion_video(
        joints, points, batch.K, R, T, d.height, d.width))
    frames = render_motion_video(joints, points, batch.K, R, T, d.height, d.width)
    encode_s = part(f"VAE encode ({vae_kind})", lambda: vae.encode(frames))
    decode_s = part(f"VAE decode ({vae_kind}, once per sample)",
                    lambda: vae.decode(batch.video_latent))
    per_block = dit[2] - dit[1]
    depth = cfg.model.num_layers
    dit_s = dit[1] + (depth - 1) * per_block
    step = dit_s + 2 * vid_s + proj_s + encode_s
    anchor_cfg = load_config(flavour=cfg.flavour, overrides=[
        "--data.height", str(ANCHOR_HEIGHT), "--data.width", str(ANCHOR_WIDTH)])
    ratio = svimo_forward_flops(cfg)["total"] / svimo_forward_flops(anchor_cfg, motion=False)[
        "total"]
    rows += [
        {"what": f"sampling step, {depth} blocks (extrapolated)", "s": _sig(step),
         "note": f"DiT {dit_s:.3g} s (one block {1e3 * per_block:.1f} ms), VID 2 x "
                 f"{vid_s:.3g} s, Proj {proj_s:.3g} s, encode {encode_s:.3g} s"},
        {"what": "50 steps + decode (extrapolated)", "s": _sig(50 * step + decode_s),
         "note": f"CogVideoX-5B anchor {ANCHOR_SECONDS:g} s x FLOPs ratio {ratio:.2f} = "
                 f"{ANCHOR_SECONDS * ratio:.0f} s (H100)"},
    ]
    return rows


# ---------------------------------------------------------------------------------------------
# 5. memory per GPU, ZeRO-3
# ---------------------------------------------------------------------------------------------


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward while `fn` runs (what a forward keeps
    until its backward), counted once per storage."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


LORA_RANKS = (16, 64, 128)
BYTES_PER_FROZEN_PARAMETER = 2
"""A frozen parameter (LoRA's foundation weights) keeps its bf16 weight alone, sharded."""


def parameter_counts(cfg: Config, lora_rank: int = 0) -> tuple[int, int]:
    """(trainable, frozen) SViMo + VID parameters, built on the meta device (no memory); with
    `lora_rank`, SViMo with the run's adapters (`hoi.train.lora`)."""
    with torch.device("meta"):
        svimo, vid = SViMo(cfg), VID(cfg)
    if lora_rank:
        add_lora(svimo, dataclasses.replace(cfg.train, lora_rank=lora_rank))
    params = [p for net in (svimo, vid) for p in net.parameters()]
    return (sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() for p in params if not p.requires_grad))


def state_bytes(cfg: Config, lora_rank: int = 0) -> int:
    """Model states of ZeRO-3 training, all GPUs together: 16 bytes per trained parameter,
    2 per frozen one."""
    trainable, frozen = parameter_counts(cfg, lora_rank)
    return BYTES_PER_PARAMETER_ZERO * trainable + BYTES_PER_FROZEN_PARAMETER * frozen


def memory_rows(cfg: Config, device: torch.device, dtype: torch.dtype,
                gpus: tuple[int, ...] = (8, 16)) -> Rows:
    """Full training at micro-batch 1-4 on `gpus`, then LoRA (`LORA_RANKS`) at micro-batch 1
    on each: the same activations (every block's input and the recomputed block's own), the
    states of what trains."""
    model, inputs = _block_inputs(cfg, device, dtype)
    block = model.transformer_blocks[0]
    block_saved = saved_bytes(lambda: block(*inputs, None))
    element = torch.finfo(dtype).bits // 8
    checkpoint_input = cfg.sequence_length * cfg.model.hidden_size * element  # per block
    trainable, _ = parameter_counts(cfg)

    def row(what: str, states: float, batch: int) -> dict:
        activations = batch * (cfg.model.num_layers * checkpoint_input + block_saved)
        return {"what": what, "states GB": _sig(states / 1e9),
                "activations GB": _sig(activations / 1e9),
                "total GB": _sig((states + activations) / 1e9)}

    full = state_bytes(cfg)
    rows = [row(f"ZeRO-3, micro-batch {batch}, {n} GPUs", full / n, batch)
            for batch in (1, 2, 3, 4) for n in gpus]
    rows += [row(f"ZeRO-3 LoRA rank {rank}, micro-batch 1, {n} GPUs",
                 state_bytes(cfg, rank) / n, 1) for rank in LORA_RANKS for n in gpus]
    rows.append({"what": f"(from: {trainable / 1e9:.2f} B parameters; one block saves "
                         f"{block_saved / 1e9:.2f} GB at micro-batch 1; checkpointed inputs "
                         f"{cfg.model.num_layers} x {checkpoint_input / 1e9:.3f} GB)"})
    return rows


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", default="svimo-5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--backend", default="sdpa", choices=("sdpa", "flash"),
                        help="attention backend of the block and sampling parts")
    parser.add_argument("--vae", default="cogvideox", choices=("cogvideox", "codec"),
                        help="VAE re-encoding the guidance: CogVideoX's sizes or the codec's")
    parser.add_argument("--parts", default="attention,block,train,sampling,memory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-layers", type=int, default=2, help="blocks of the train step")
    parser.add_argument("--train-steps", type=int, default=2, help="train steps timed")
    parser.add_argument("--guidance", type=float, default=6.0, help="CFG scale (6: CogVideoX's)")
    parser.add_argument("--json", help="write the rows, command and machine here")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu: no CUDA device here; --device cpu runs the same parts", file=sys.stderr)
        return 2
    cfg = load_config(flavour=args.flavour, overrides=["--model.attention_backend", args.backend])
    parts = {
        "attention": lambda: attention_rows(cfg, device, dtype, args.repeats),
        "block": lambda: block_rows(cfg, device, dtype, args.repeats),
        "train": lambda: train_rows(cfg, device, dtype, args.vae, args.train_layers,
                                    args.train_steps),
        "sampling": lambda: sampling_rows(cfg, device, dtype, args.vae, args.repeats,
                                          args.guidance),
        "memory": lambda: memory_rows(cfg, device, dtype),
    }
    chosen = args.parts.split(",")
    unknown = set(chosen) - set(parts)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {sorted(parts)}")
    rows: Rows = []
    torch.manual_seed(0)
    failed = False
    for name in (n for n in parts if n in chosen):
        began = time.perf_counter()
        try:
            part = parts[name]()
        except Exception as e:  # noqa: BLE001 - the other parts' figures still count
            traceback.print_exc()
            part, failed = [{"what": f"{name}: failed", "error": _error(e)}], True
        _release(device)
        print_table(part)
        print(f"({name}: {time.perf_counter() - began:.0f} s)\n", flush=True)
        rows += [row | {"part": name} for row in part]
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
                 "machine": machine(), "rows": rows}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
