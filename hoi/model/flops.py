"""Analytic FLOPs of SViMo, VID and one closed-loop training step (for MFU and the benchmarks).

Conventions:
- A multiply-add counts as 2 FLOPs: a Linear over T tokens costs 2 T d_in d_out, a conv
  2 x (output positions) x C_in x C_out x (kernel volume), an attention 4 Lq Lk d per head
  (QK^T and AV).
- Only matrix products are counted (Linear, convolutions, the two attention products). Biases
  and element-wise work (LayerNorm, GroupNorm, RoPE, softmax, GELU/SiLU, gating, residuals,
  positional codes) are ignored. The largest, softmax (a few operations per score against
  4 x head_dim per score for QK^T and AV), adds about 1% at the paper's sizes.
  The counted products are exactly those of ``torch.utils.flop_counter.FlopCounterMode``, and
  the tests check the two agree operation for operation.
- Padded convolution positions count in full (a 3x3x3 conv costs the same at the border).

Token counts come from the config alone: text = ``model.max_text_tokens``, video and motion
``cfg.tokens_per_stream`` each, VID's memory ``vid_memory_length(cfg)``, VID's queries one per
video frame and entity group (``data.num_frames`` x the groups of ``vid.tokens``).
"""

from __future__ import annotations

import math

from hoi.config import Config
from hoi.geometry.motion import NUM_ENTITIES
from hoi.model.vid import ENTITY_GROUPS, TIMESTEP_FREQUENCIES

FF_MULT = 4
"""Feed-forward inner width / hidden width, in both SViMo (diffusers' FeedForward default)
and VID."""
VID_CONV_KERNEL = 3 ** 3
"""VID's encoder convs are 3x3x3."""
VID_MODULATION = 9
"""VID layers' adaLN outputs: (shift, scale, gate) for self-, cross-attention, feed-forward."""
SVIMO_MODULATION = 6
"""SViMo's text+video adaLN outputs per norm (shift, scale, gate for each); motion adds 3."""
OUTPUT_MODULATION = 2
"""Output heads' adaLN outputs: shift and scale."""


def _linear(tokens: float, fan_in: int, fan_out: int) -> float:
    return 2.0 * tokens * fan_in * fan_out


def _attention(queries: float, keys: float, width: int) -> float:
    """QK^T and AV over all heads: width = heads x head_dim, per batch element x queries."""
    return 4.0 * queries * keys * width


def _conv(positions: float, in_channels: int, out_channels: int, kernel_volume: int) -> float:
    return 2.0 * positions * in_channels * out_channels * kernel_volume


def _with_total(parts: dict[str, float]) -> dict[str, float]:
    return parts | {"total": sum(parts.values())}


# ---------------------------------------------------------------------------------------------
# SViMo
# ---------------------------------------------------------------------------------------------


def svimo_forward_flops(cfg: Config, batch: int = 1, motion: bool = True) -> dict[str, float]:
    """FLOPs of one SViMo forward over `batch` clips, by part.

    Args:
        cfg: the run config (model sizes, clip size, `model.motion_attention_mask`).
        batch: clips per forward.
        motion: False for the video-only forward (no motion stream, no motion head).
    Returns:
        {"attention_scores": QK^T and AV (the part quadratic in the sequence; with the motion
        mask, text+video queries see text+video keys only, motion queries see all),
        "attention_projections": q, k, v, out, "feed_forward", "modulation": every adaLN
        linear (blocks and output heads), "embeddings": patch convs, text projection, time
        MLP, "heads": proj_out, "total"}.
    """
    m = cfg.model
    D, T, p, C = m.hidden_size, m.time_embed_dim, m.patch_size, cfg.latent.channels
    text, visual = m.max_text_tokens, cfg.tokens_per_stream
    streams = 2 if motion else 1
    length = text + streams * visual
    tokens = batch * length

    if motion and m.motion_attention_mask:
        prefix = text + visual
        scores = _attention(prefix, prefix, D) + _attention(visual, length, D)
    else:
        scores = _attention(length, length, D)
    # the motion stream's own modulation in every block, or the even-indexed ones only
    motion_blocks = (0 if not motion else m.num_layers if m.motion_modulation == "all"
                     else (m.num_layers + 1) // 2)
    parts = {
        "attention_scores": m.num_layers * batch * scores,
        "attention_projections": m.num_layers * 4 * _linear(tokens, D, D),
        "feed_forward": m.num_layers * 2 * _linear(tokens, D, FF_MULT * D),
        # norm1 and norm2 per block, then one adaLN per output head
        "modulation": (m.num_layers * 2 * _linear(batch, T, SVIMO_MODULATION * D)
                       + motion_blocks * 2 * _linear(batch, T, 3 * D)
                       + streams * _linear(batch, T, OUTPUT_MODULATION * D)),
        # the patch convs see [latent, condition] (2C channels); the time MLP is D -> T -> T
        "embeddings": (streams * _conv(batch * visual, 2 * C, D, p * p)
                       + _linear(batch * text, m.text_embed_dim, D)
                       + _linear(batch, D, T) + _linear(batch, T, T)),
        "heads": streams * _linear(batch * visual, D, p * p * C),
    }
    return _with_total(parts)


# ---------------------------------------------------------------------------------------------
# VID
# ---------------------------------------------------------------------------------------------


def vid_scale_grids(cfg: Config) -> list[tuple[int, int, int]]:
    """(F, h_s, w_s) of each encoder scale: the first keeps the latent size, every later stage
    is a stride-2, padding-1 3x3x3 conv, h_s = ceil(h_{s-1} / 2)."""
    frames, h, w = cfg.latent_shape
    grids = []
    for s in range(len(cfg.vid.encoder_channels)):
        if s > 0:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        grids.append((frames, h, w))
    return grids


def vid_memory_length(cfg: Config) -> int:
    """Cross-attention memory tokens: sum over scales of F h_s w_s, plus the text tokens
    (69,290 + 226 for svimo-5b)."""
    return sum(f * h * w for f, h, w in vid_scale_grids(cfg)) + cfg.model.max_text_tokens


def vid_forward_flops(cfg: Config, batch: int = 1) -> dict[str, float]:
    """FLOPs of one VID forward over `batch` clips, by part.

    Returns:
        {"encoders": the 3D convs of both latent encoders at every scale, "fusion": the 1x1x1
        convs into the memory, "self_attention_scores": QK^T and AV over the N x G motion
        tokens (G entity groups per frame), "cross_attention_scores": those queries x the
        memory, "attention_projections": q, kv, out of both attentions (the memory's kv
        projection included), "feed_forward",
        "modulation": adaLN linears of the layers and the head, "embeddings": motion Linears,
        time MLP and the text projection, "heads": the output Linears, "total"}.
    """
    v = cfg.vid
    D, frames = v.hidden_size, cfg.data.num_frames
    memory = vid_memory_length(cfg)
    tokens = frames * len(ENTITY_GROUPS[v.tokens])  # per clip
    queries = batch * tokens
    encoders = fusion = 0.0
    in_channels = cfg.latent.channels
    for (f, h, w), channels in zip(vid_scale_grids(cfg), v.encoder_channels, strict=True):
        positions = batch * f * h * w
        stage = (_conv(positions, in_channels, channels, VID_CONV_KERNEL)
                 + _conv(positions, channels, channels, VID_CONV_KERNEL))
        encoders += 2 * stage  # video and motion encoders, same shapes
        fusion += _conv(positions, 2 * channels, D, 1)
        in_channels = channels
    # q and out over the queries, kv over the keys: frames (self) or the memory (cross)
    projections = (2 * _linear(queries, D, D) + _linear(queries, D, 2 * D)
                   + 2 * _linear(queries, D, D) + _linear(batch * memory, D, 2 * D))
    coordinates = NUM_ENTITIES * 3
    parts = {
        "encoders": encoders,
        "fusion": fusion,
        "self_attention_scores": v.num_layers * _attention(queries, tokens, D),
        "cross_attention_scores": v.num_layers * _attention(queries, memory, D),
        "attention_projections": v.num_layers * projections,
        "feed_forward": v.num_layers * 2 * _linear(queries, D, FF_MULT * D),
        "modulation": (v.num_layers * _linear(batch, D, VID_MODULATION * D)
                       + _linear(batch, D, OUTPUT_MODULATION * D)),
        # each group's Linear maps its share of the coordinates: all groups, one per frame
        "embeddings": (_linear(batch * frames, coordinates, D)
                       + _linear(batch, TIMESTEP_FREQUENCIES, D) + _linear(batch, D, D)
                       + _linear(batch * cfg.model.max_text_tokens, cfg.model.text_embed_dim, D)),
        "heads": _linear(batch * frames, D, coordinates),
    }
    return _with_total(parts)


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------

BACKWARD_FACTOR = 3.0
"""Forward + backward of a trained pass ~ 3 x its forward (the backward computes gradients
of both the inputs and the weights, each as costly as the forward)."""


def training_step_flops(cfg: Config, batch: int) -> float:
    """Model FLOPs of one joint-phase closed-loop step over `batch` clips (`hoi/diffusion/
    closed_loop.py`), for `cfg.loop.variant`.

    "full" (the paper): 3 x (SViMo forward + VID forward with gradient) + VID forward without
    gradient (the interaction guidance). "guidance_only": VID runs once, with gradient, and
    SViMo: 3 x (SViMo + VID). "gradient_only": no guidance pass, 3 x (SViMo + VID). "no_vid":
    3 x SViMo. SViMo always runs with its motion stream.

    Excluded, by convention: the VAE encode of the guidance render and the rendering itself
    (frozen and outside the two networks), the optimizer, element-wise work (see the module
    docstring), and the recomputation of gradient checkpointing: these are model FLOPs, the
    numerator of MFU, not the hardware's FLOPs. The warm-up phase: `warmup_step_flops`.
    """
    svimo = svimo_forward_flops(cfg, batch, motion=True)["total"]
    vid = vid_forward_flops(cfg, batch)["total"]
    variant = cfg.loop.variant
    if variant == "no_vid":
        return BACKWARD_FACTOR * svimo
    trained = BACKWARD_FACTOR * (svimo + vid)
    return trained + vid if variant == "full" else trained


def warmup_step_flops(cfg: Config, batch: int) -> float:
    """Model FLOPs of one warm-up step over `batch` clips: 3 x VID forward, plus 3 x SViMo
    forward when SViMo's video stream trains too (`loop.svimo_warmup`)."""
    flops = vid_forward_flops(cfg, batch)["total"]
    if cfg.loop.svimo_warmup:
        flops += svimo_forward_flops(cfg, batch, motion=True)["total"]
    return BACKWARD_FACTOR * flops


__all__ = ["svimo_forward_flops", "training_step_flops", "vid_forward_flops",
           "vid_memory_length", "vid_scale_grids", "warmup_step_flops"]
