"""Vision-aware 3D interaction diffusion network (VID; paper section 3.4, SPEC section 4).

VID denoises an explicit 3D motion, hand joints and object points, given the video latent and
the motion latent of the synchronized diffusion::

    x0_hat = VID(motion_t, video_latent, motion_latent, t, text)

The network only predicts; noise schedules and losses live in ``hoi.diffusion``.

1. **Dual-stream 3D-conv encoders** (`LatentEncoder`, one for the video latent, one for the
   motion latent, no shared weights): one stage per ``cfg.vid.encoder_channels`` entry; every
   stage after the first halves height and width and keeps the latent frames, so each stage
   gives one scale of spatio-temporal features.
2. **Fusion into a memory** (`FeatureFusion`): at each scale the two streams are concatenated
   on channels and a 1x1x1 conv projects them to the transformer width (one layer that is
   both the fusion and the projection: it equals the sum of a projection of each stream).
   Tokens get a temporal encoding in *video frame* units (latent frame k at video frame 4k),
   a 2D spatial encoding of cell centres normalised to [0, 1] (so that all scales share one
   coordinate system) and a learned per-scale embedding; all scales are concatenated. The
   prompt's text features, projected to the same width, join the memory (`text_embed`): the
   prompt names the action, tool and target, which fix most of the motion, and the latents
   VID reads at sampling are SViMo's estimates (decision in docs/model.md).
3. **Denoiser** (`VIDLayer`): per video frame one token per entity group
   (`cfg.vid.tokens`): "entity" gives the left hand, right hand, tool and target a token each
   (a Linear from that group's coordinates, plus a learned group embedding), so each can find
   its own object in the memory; "frame" gives the whole frame one token (340 x 3
   coordinates). Tokens carry the memory's temporal encoding (tokens at the same time carry
   the same code) and adaLN modulation (scale, shift, gate) from the timestep embedding;
   each layer is self-attention over all tokens, cross-attention to the memory and a
   feed-forward, all pre-norm.
4. **Output head**: adaLN-modulated norm and one Linear per group back to its coordinates,
   initialised small (not zero) so that the first x0 predictions are near the data mean and
   gradients reach every part from the first step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hoi.artifacts import Pretrained
from hoi.config import Config
from hoi.geometry.hand import JOINTS_PER_HAND
from hoi.geometry.motion import NUM_ENTITIES, NUM_JOINTS, POINTS_PER_OBJECT

TIMESTEP_FREQUENCIES = 256
"""Width of the sinusoidal timestep code fed to the timestep MLP (as in DiT)."""
SPATIAL_RESOLUTION = 128.0
"""Positions in [0, 1] are scaled by this before their sinusoidal code, whose wavelengths then
run from 2 pi / 128 (finer than one cell of the 78-wide paper latent) to 2 pi (several image
widths), so the code neither aliases nor wastes channels."""
OUTPUT_INIT_GAIN = 0.1
"""The output head starts with predictions of about this standard deviation (data is O(1))."""
ENTITY_GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "frame": ((0, NUM_ENTITIES),),
    "entity": ((0, JOINTS_PER_HAND), (JOINTS_PER_HAND, NUM_JOINTS),
               (NUM_JOINTS, NUM_JOINTS + POINTS_PER_OBJECT),
               (NUM_JOINTS + POINTS_PER_OBJECT, NUM_ENTITIES)),
}
"""`cfg.vid.tokens` -> the [start, stop) entity ranges that get one token each per frame:
the whole frame, or the left hand, right hand, tool and target."""
MODULATION_INIT_STD = 0.02
"""Weights of the adaLN modulation layers: small, so blocks start as plain pre-norm blocks
(gates near 1) while the timestep already changes the output at initialisation."""


# ---------------------------------------------------------------------------------------------
# Positional encodings
# ---------------------------------------------------------------------------------------------


def sinusoidal_embedding(positions: torch.Tensor, dim: int,
                         max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal code of real-valued positions, float32.

    Args:
        positions: (...) positions (any real numbers, e.g. video frame indices or timesteps).
        dim: code width; the first half holds cosines, the second half sines (a zero channel
            is appended when `dim` is odd).
        max_period: longest wavelength / 2 pi; frequencies run from 1 down to 1 / max_period.
    Returns:
        (..., dim): [cos(p w_0), ..., cos(p w_{d/2-1}), sin(p w_0), ...] with
        w_i = max_period ** (-i / (dim // 2)).
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=positions.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    angles = positions.float()[..., None] * freqs
    code = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        code = F.pad(code, (0, 1))
    return code


def latent_frame_positions(num_latent_frames: int, temporal_compression: int,
                           device: torch.device | None = None) -> torch.Tensor:
    """(F,) float32 video frame that each latent frame stands for: latent frame k -> k * 4.

    Latent frame 0 is video frame 0 and latent frame k >= 1 summarises video frames
    4k - 3 .. 4k; we place it at the last of them, 4k, so both ends of the clip align."""
    return torch.arange(num_latent_frames, dtype=torch.float32, device=device) \
        * temporal_compression


def spatial_embedding(height: int, width: int, dim: int,
                      device: torch.device | None = None) -> torch.Tensor:
    """(height * width, dim) float32 code of a grid's cell centres, row-major.

    Centres are normalised to [0, 1] ((i + 0.5) / height, (j + 0.5) / width), so a coarse
    scale's cell and the fine cells it covers get close codes. The first dim // 2 channels
    encode the row, the rest the column."""
    rows = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    cols = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    row_code = sinusoidal_embedding(rows * SPATIAL_RESOLUTION, dim // 2, SPATIAL_RESOLUTION)
    col_code = sinusoidal_embedding(cols * SPATIAL_RESOLUTION, dim - dim // 2, SPATIAL_RESOLUTION)
    return torch.cat([row_code[:, None].expand(height, width, -1),
                      col_code[None, :].expand(height, width, -1)], dim=-1).flatten(0, 1)


# ---------------------------------------------------------------------------------------------
# Dual-stream 3D-convolutional latent encoders
# ---------------------------------------------------------------------------------------------


def _num_groups(channels: int) -> int:
    """GroupNorm groups: 32 where the channels allow it (the usual choice), else a divisor."""
    return math.gcd(channels, 32)


class ConvStage(nn.Sequential):
    """Two 3x3x3 convs with GroupNorm + SiLU; the first may halve height and width.

    (B, C_in, F, h, w) -> (B, C_out, F, ceil(h / s), ceil(w / s)), s = 2 if downsample else 1.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        stride = (1, 2, 2) if downsample else 1  # the latent frames are kept at every scale
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.GroupNorm(_num_groups(out_channels), out_channels),
            nn.SiLU(),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.GroupNorm(_num_groups(out_channels), out_channels),
            nn.SiLU(),
        )


class LatentEncoder(nn.Module):
    """Multi-scale 3D-conv encoder of one latent stream (video or motion)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        self.stages = nn.ModuleList(
            ConvStage(widths[i], widths[i + 1], downsample=i > 0) for i in range(len(channels)))
        self.gradient_checkpointing = False

    def forward(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, F, h, w) -> one (B, channels[s], F, h_s, w_s) map per stage, h_s = h / 2^s."""
        features, x = [], latent
        for stage in self.stages:
            x = _maybe_checkpoint(stage, self.gradient_checkpointing, x)
            features.append(x)
        return features


# ---------------------------------------------------------------------------------------------
# Fusion of the two streams into the cross-attention memory
# ---------------------------------------------------------------------------------------------


class FeatureFusion(nn.Module):
    """Video and motion features of all scales -> one token memory (B, L, hidden).

    L = sum over scales of F * h_s * w_s."""

    def __init__(self, channels: tuple[int, ...], hidden_size: int,
                 temporal_compression: int) -> None:
        super().__init__()
        # Concatenation + 1x1x1 conv: fuses the streams and projects to the width in one layer.
        self.projections = nn.ModuleList(nn.Conv3d(2 * c, hidden_size, 1) for c in channels)
        self.norm = nn.LayerNorm(hidden_size)
        self.scale_embedding = nn.Parameter(torch.randn(len(channels), hidden_size) * 0.02)
        self.temporal_compression = temporal_compression

    def forward(self, video_features: list[torch.Tensor],
                motion_features: list[torch.Tensor]) -> torch.Tensor:
        """Lists of (B, c_s, F, h_s, w_s) per scale, one per stream -> (B, L, hidden)."""
        tokens = []
        for s, (v, m) in enumerate(zip(video_features, motion_features, strict=True)):
            fused = self.projections[s](torch.cat([v, m], dim=1))  # (B, D, F, h_s, w_s)
            tokens.append(self._tokens(fused, s))
        return torch.cat(tokens, dim=1)

    def _tokens(self, fused: torch.Tensor, scale: int) -> torch.Tensor:
        """(B, D, F, h, w) -> (B, F * h * w, D) with positions and the scale embedding added."""
        _, dim, frames, height, width = fused.shape
        x = self.norm(fused.permute(0, 2, 3, 4, 1))  # (B, F, h, w, D)
        device = fused.device
        time_code = sinusoidal_embedding(
            latent_frame_positions(frames, self.temporal_compression, device), dim)
        space_code = spatial_embedding(height, width, dim, device).view(height, width, dim)
        position = time_code[:, None, None] + space_code[None]  # (F, h, w, D)
        x = x + position.to(x.dtype) + self.scale_embedding[scale]
        return x.flatten(1, 3)


# ---------------------------------------------------------------------------------------------
# Transformer denoiser
# ---------------------------------------------------------------------------------------------


class TimestepEmbedding(nn.Module):
    """(B,) integer timesteps -> (B, hidden): sinusoidal code + 2-layer MLP."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQUENCIES, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        code = sinusoidal_embedding(t, TIMESTEP_FREQUENCIES)
        return self.mlp(code.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Multi-head attention with torch's scaled_dot_product_attention.

    Self-attention when `context` is None, else cross-attention from x to context."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(hidden_size, hidden_size)
        self.to_kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.to_out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Lq, D), context (B, Lk, D) or None -> (B, Lq, D)."""
        context = x if context is None else context
        q = self._heads(self.to_q(x))
        k, v = (self._heads(z) for z in self.to_kv(context).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Lq, d)
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, heads, L, D / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, L, D), shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class VIDLayer(nn.Module):
    """Pre-norm block: self-attention over frames, cross-attention to the memory, feed-forward;
    each branch modulated (shift, scale) and gated by the timestep embedding."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(
            nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6) for _ in range(3))
        self.self_attn = Attention(hidden_size, num_heads)
        self.cross_attn = Attention(hidden_size, num_heads)
        self.ff = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(approximate="tanh"),
                                nn.Linear(4 * hidden_size, hidden_size))
        # (shift, scale, gate) for each of the three branches
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 9 * hidden_size))
        _init_modulation(self.modulation[1], gated=True)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) motion tokens, memory (B, L, D), c (B, D) timestep embedding -> (B, N, D)."""
        mods = self.modulation(c).chunk(9, dim=-1)
        branches = (lambda h: self.self_attn(h), lambda h: self.cross_attn(h, memory), self.ff)
        for i, branch in enumerate(branches):
            shift, scale, gate = mods[3 * i: 3 * i + 3]
            x = x + gate[:, None] * branch(_modulate(self.norms[i](x), shift, scale))
        return x


class OutputHead(nn.Module):
    """(B, N, G, D) tokens -> (B, N, 340, 3): an adaLN-modulated norm, then one Linear per
    entity group back to that group's coordinates."""

    def __init__(self, hidden_size: int, groups: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        _init_modulation(self.modulation[1], gated=False)
        self.linears = nn.ModuleList(nn.Linear(hidden_size, 3 * (stop - start))
                                     for start, stop in groups)
        for linear in self.linears:
            # unit-variance normalised tokens -> outputs of std OUTPUT_INIT_GAIN, any width
            nn.init.normal_(linear.weight, std=OUTPUT_INIT_GAIN / math.sqrt(hidden_size))
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        batch, frames, groups, dim = x.shape
        x = _modulate(self.norm(x.flatten(1, 2)), shift, scale).view(batch, frames, groups, dim)
        return torch.cat([linear(x[:, :, g]).unflatten(-1, (-1, 3))
                          for g, linear in enumerate(self.linears)], dim=2)


def _init_modulation(linear: nn.Linear, gated: bool) -> None:
    """Small weights; zero shift/scale bias and, for gated blocks, gate bias 1: every block
    starts close to a plain pre-norm block (unlike DiT's adaLN-Zero, whose zero gates would
    cut the conditioning's gradient at the first step)."""
    nn.init.normal_(linear.weight, std=MODULATION_INIT_STD)
    nn.init.zeros_(linear.bias)
    if gated:
        with torch.no_grad():
            linear.bias.view(-1, 3, linear.in_features)[:, 2] = 1.0


def _maybe_checkpoint(module: nn.Module, enabled: bool, *args: torch.Tensor) -> torch.Tensor:
    """module(*args), recomputed in the backward pass when enabled, training and tracking."""
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


# ---------------------------------------------------------------------------------------------
# VID
# ---------------------------------------------------------------------------------------------


class VID(Pretrained):
    """Vision-aware 3D interaction diffusion network: x0-prediction of a normalised motion.

    Built from `cfg.vid` (widths, layers, heads, encoder channels), `cfg.latent.channels` and
    `cfg.latent.temporal_compression`. Nothing depends on the clip length or latent size, so
    any N, F, h, w work.

    Attributes:
        gradient_checkpointing: recompute each encoder stage and transformer layer in the
            backward pass (only while training with gradients enabled).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        vid = cfg.vid
        channels = tuple(vid.encoder_channels)
        self.latent_channels = cfg.latent.channels
        self.temporal_compression = cfg.latent.temporal_compression
        self.hidden_size = vid.hidden_size
        self.video_encoder = LatentEncoder(cfg.latent.channels, channels)
        self.motion_encoder = LatentEncoder(cfg.latent.channels, channels)
        self.fusion = FeatureFusion(channels, vid.hidden_size, cfg.latent.temporal_compression)
        self.text_embed = nn.Sequential(nn.Linear(cfg.model.text_embed_dim, vid.hidden_size),
                                        nn.LayerNorm(vid.hidden_size))
        self.groups = ENTITY_GROUPS[vid.tokens]
        self.motion_embed = nn.ModuleList(nn.Linear(3 * (stop - start), vid.hidden_size)
                                          for start, stop in self.groups)
        self.group_embedding = nn.Parameter(torch.randn(len(self.groups), vid.hidden_size) * 0.02)
        self.time_embed = TimestepEmbedding(vid.hidden_size)
        self.layers = nn.ModuleList(
            VIDLayer(vid.hidden_size, vid.num_heads) for _ in range(vid.num_layers))
        self.head = OutputHead(vid.hidden_size, self.groups)
        self.config = cfg
        self.gradient_checkpointing = vid.gradient_checkpointing

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        self._gradient_checkpointing = enabled
        self.video_encoder.gradient_checkpointing = enabled
        self.motion_encoder.gradient_checkpointing = enabled

    def encode_latents(self, video_latent: torch.Tensor,
                       motion_latent: torch.Tensor) -> torch.Tensor:
        """Latents (B, F, C, h, w) each -> cross-attention memory (B, L, hidden),
        L = F * sum_s h_s * w_s over the encoder scales."""
        if video_latent.shape != motion_latent.shape:
            raise ValueError(f"video latent {tuple(video_latent.shape)} and motion latent "
                             f"{tuple(motion_latent.shape)} must have the same shape")
        if video_latent.ndim != 5 or video_latent.shape[2] != self.latent_channels:
            raise ValueError(f"latents must be (B, F, {self.latent_channels}, h, w), "
                             f"got {tuple(video_latent.shape)}")
        # (B, F, C, h, w) -> Conv3d's (B, C, F, h, w)
        video_features = self.video_encoder(video_latent.transpose(1, 2))
        motion_features = self.motion_encoder(motion_latent.transpose(1, 2))
        return self.fusion(video_features, motion_features)

    def forward(self, motion_t: torch.Tensor, video_latent: torch.Tensor,
                motion_latent: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Predict the clean motion.

        Args:
            motion_t: (B, N, 340, 3) noisy normalised camera-frame motion, N video frames.
            video_latent: (B, F, C, h, w) video latent, F = (N - 1) / 4 + 1 normally.
            motion_latent: (B, F, C, h, w) latent of the rendered motion video.
            t: (B,) integer timesteps.
            text: (B, L, model.text_embed_dim) the prompt's features, as SViMo gets them.
        Returns:
            (B, N, 340, 3) x0_hat, in motion_t's dtype: the network computes in its own (bf16
            on GPUs), the 3D motion around it stays in what the caller keeps it in (float32:
            in bf16 normalised units are a millimetre apart, the size of the motion's
            velocity and acceleration terms).
        """
        batch, frames = motion_t.shape[:2]
        if motion_t.shape[2:] != (NUM_ENTITIES, 3):
            raise ValueError(f"motion must be (B, N, {NUM_ENTITIES}, 3), "
                             f"got {tuple(motion_t.shape)}")
        if t.shape != (batch,) or video_latent.shape[0] != batch or text.shape[0] != batch:
            raise ValueError(f"batch sizes differ: motion {batch}, t {tuple(t.shape)}, "
                             f"latents {video_latent.shape[0]}, text {text.shape[0]}")
        # 1. memory from both latent streams and the prompt, in the network's dtype
        dtype = self.group_embedding.dtype
        memory = torch.cat([self.encode_latents(video_latent.to(dtype), motion_latent.to(dtype)),
                            self.text_embed(text.to(dtype))], dim=1)
        # 2. one token per entity group and video frame, timed in video frames like the memory
        motion = motion_t.to(dtype)
        x = torch.stack([embed(motion[:, :, start:stop].flatten(2)) for embed, (start, stop)
                         in zip(self.motion_embed, self.groups, strict=True)], dim=2)
        frame_positions = torch.arange(frames, dtype=torch.float32, device=motion_t.device)
        time_code = sinusoidal_embedding(frame_positions, self.hidden_size).to(x.dtype)
        x = x + time_code[:, None] + self.group_embedding  # (B, N, G, D)
        c = self.time_embed(t)
        # 3. denoise all tokens together
        x = x.flatten(1, 2)
        for layer in self.layers:
            x = _maybe_checkpoint(layer, self.gradient_checkpointing, x, memory, c)
        # 4. back to coordinates
        return self.head(x.view(batch, frames, len(self.groups), -1), c).to(motion_t.dtype)


__all__ = ["VID", "FeatureFusion", "LatentEncoder", "VIDLayer", "latent_frame_positions",
           "sinusoidal_embedding", "spatial_embedding"]
