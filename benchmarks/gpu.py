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
3. **sampling**: the closed-loop `Sampler` (DiT, VID, Proj render, VAE re-encode, each step)
   with 1- and 2-block DiTs; their difference is one block's cost per step, which
   extrapolates the step to the flavour's depth, then to 50 steps with classifier-free
   guidance (the DiT on a batch of 2). Next to it, CogVideoX-5B's ~90 s for 50 steps at
   17,776 tokens on one H100, scaled by the FLOPs ratio of the two models.
4. **memory**: bytes per GPU of ZeRO-3 training at micro-batch 1-4 on 8 and 16 GPUs: model
   states (bf16 weights and gradients, fp32 master weights and Adam moments, 16 bytes a
   parameter, sharded) + activations measured as the bytes autograd saves: with gradient
   checkpointing each block keeps its input, and the block being recomputed keeps all of
   its own (measured here at micro-batch 1, linear in the micro-batch).

Every part runs at any size on any device; record figures with the device name in
docs/benchmarks.md ("GPU").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.run import machine, print_table  # noqa: E402
from hoi.config import Config, load_config  # noqa: E402
from hoi.model.attention import flash_available  # noqa: E402
from hoi.model.flops import svimo_forward_flops  # noqa: E402
from hoi.model.svimo import SViMo  # noqa: E402
from hoi.model.vid import VID  # noqa: E402
from hoi.train.meter import peak_tflops  # noqa: E402

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
# 3. a sampling step, extrapolated
# ---------------------------------------------------------------------------------------------


def _vae(cfg: Config, kind: str):
    from diffusers import AutoencoderKLCogVideoX

    from hoi.model.encoders import VideoVAE
    from hoi.train.codec import build_vae

    # CogVideoX's own VAE sizes (the class defaults), random weights: the cost is the same
    vae = AutoencoderKLCogVideoX() if kind == "cogvideox" else build_vae(cfg)
    if kind == "cogvideox":
        vae.enable_slicing()
        vae.enable_tiling()
    return VideoVAE(vae)


def _sample_seconds(cfg: Config, layers: int, vae, device: torch.device, dtype: torch.dtype,
                    steps: int, guidance: float) -> float:
    from hoi.diffusion.sampler import Sampler

    small = _depth(cfg, layers)
    torch.manual_seed(0)
    svimo = SViMo(small).to(device=device, dtype=dtype).eval()
    vid = VID(small).to(device=device, dtype=dtype).eval()
    sampler = Sampler(small, svimo, vid, vae)
    F_, h, w = cfg.latent_shape
    m = cfg.model
    image = torch.randn(1, 1, cfg.latent.channels, h, w, device=device, dtype=dtype)
    text = torch.randn(1, m.max_text_tokens, m.text_embed_dim, device=device, dtype=dtype)
    K = torch.tensor([[[cfg.data.width, 0, cfg.data.width / 2],
                       [0, cfg.data.width, cfg.data.height / 2], [0, 0, 1]]], device=device)

    def run() -> None:
        sampler(image, text, K, generator=torch.Generator(device).manual_seed(0),
                null_text=torch.zeros_like(text), guidance_scale=guidance, num_steps=steps)
    return timed(run, device, 1) / steps


def sampling_rows(cfg: Config, device: torch.device, dtype: torch.dtype, vae_kind: str,
                  steps: int, guidance: float) -> Rows:
    vae = _vae(cfg, vae_kind).to(device=device, dtype=dtype)
    one = _sample_seconds(cfg, 1, vae, device, dtype, steps, guidance)
    two = _sample_seconds(cfg, 2, vae, device, dtype, steps, guidance)
    per_block = two - one
    depth = cfg.model.num_layers
    step = one + (depth - 1) * per_block
    anchor_cfg = load_config(flavour=cfg.flavour, overrides=[
        "--data.height", str(ANCHOR_HEIGHT), "--data.width", str(ANCHOR_WIDTH)])
    ratio = svimo_forward_flops(cfg)["total"] / svimo_forward_flops(anchor_cfg, motion=False)[
        "total"]
    label = f"CFG {guidance:g}" if guidance > 1 else "no CFG"
    return [
        {"what": f"sampling step, 1 block ({label})", "s": _sig(one)},
        {"what": f"sampling step, 2 blocks ({label})", "s": _sig(two)},
        {"what": f"sampling step, {depth} blocks (extrapolated)", "s": _sig(step),
         "note": f"one block {1e3 * per_block:.1f} ms, the rest {1e3 * (one - per_block):.0f} ms"},
        {"what": "50 steps (extrapolated)", "s": _sig(50 * step),
         "note": f"CogVideoX-5B anchor {ANCHOR_SECONDS:g} s x FLOPs ratio {ratio:.2f} = "
                 f"{ANCHOR_SECONDS * ratio:.0f} s (H100)"},
    ]


# ---------------------------------------------------------------------------------------------
# 4. memory per GPU, ZeRO-3
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


def parameter_count(cfg: Config) -> int:
    """SViMo + VID parameters, built on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for net in (SViMo(cfg), VID(cfg)) for p in net.parameters())


def memory_rows(cfg: Config, device: torch.device, dtype: torch.dtype,
                gpus: tuple[int, ...] = (8, 16)) -> Rows:
    model, inputs = _block_inputs(cfg, device, dtype)
    block = model.transformer_blocks[0]
    block_saved = saved_bytes(lambda: block(*inputs, None))
    element = torch.finfo(dtype).bits // 8
    checkpoint_input = cfg.sequence_length * cfg.model.hidden_size * element  # per block
    params = parameter_count(cfg)
    rows = []
    for batch in (1, 2, 3, 4):
        activations = batch * (cfg.model.num_layers * checkpoint_input + block_saved)
        for n in gpus:
            states = BYTES_PER_PARAMETER_ZERO * params / n
            rows.append({"what": f"ZeRO-3, micro-batch {batch}, {n} GPUs",
                         "states GB": _sig(states / 1e9),
                         "activations GB": _sig(activations / 1e9),
                         "total GB": _sig((states + activations) / 1e9)})
    rows.append({"what": f"(from: {params / 1e9:.2f} B parameters; one block saves "
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
    parser.add_argument("--parts", default="attention,block,sampling,memory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=2, help="steps timed per depth")
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
        "sampling": lambda: sampling_rows(cfg, device, dtype, args.vae, args.sample_steps,
                                          args.guidance),
        "memory": lambda: memory_rows(cfg, device, dtype),
    }
    unknown = set(args.parts.split(",")) - set(parts)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {sorted(parts)}")
    rows: Rows = []
    torch.manual_seed(0)
    for name, run in parts.items():
        if name in args.parts.split(","):
            part = run()
            print_table(part)
            print()
            rows += [row | {"part": name} for row in part]
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
             "machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
