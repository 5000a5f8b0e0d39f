"""SViMo: the synchronized video-motion DiT (paper section 3.3, SPEC section 3).

CogVideoX's expert-adaLN transformer with a third stream. The joint sequence is
[text, video, motion]; each block gives every modality its own adaptive LayerNorm modulation
(shift, scale, gate, for attention and again for the feed-forward, equation 4), runs one
attention with QK-norm and 3D RoPE over the whole sequence and one feed-forward over it, and
adds each modality's result back through its own gate. Motion tokens take the RoPE positions
(and learned positional embedding) of the video token at the same (frame, row, column): the
rendered motion video is pixel-aligned with the video.

Module and parameter names follow diffusers' `CogVideoXTransformer3DModel`, so that a
foundation checkpoint maps onto the text/video path name for name (`hoi/model/weights.py`);
the motion additions are the `motion_*` modules.

Shapes: latents are (B, F, C, h, w); text features (B, L, D_text); timesteps (B,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.utils.checkpoint
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import (
    TimestepEmbedding,
    Timesteps,
    apply_rotary_emb,
    get_3d_rotary_pos_embed,
    get_3d_sincos_pos_embed,
)
from diffusers.models.normalization import AdaLayerNorm
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import (
    get_resize_crop_region_for_grid,
)

from hoi.artifacts import Pretrained
from hoi.config import Config
from hoi.model.attention import attention

NORM_EPS = 1e-5      # CogVideoX's LayerNorm eps
QK_NORM_EPS = 1e-6   # CogVideoX's per-head QK LayerNorm eps
# CogVideoX's sin-cos table is built at 1.875x spatial interpolation (its default)
POS_SPATIAL_SCALE = 1.875

Rope = tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Block
# ---------------------------------------------------------------------------------------------


class TriModalNormZero(nn.Module):
    """LayerNorm + per-modality shift/scale/gate from the time embedding.

    `linear` is CogVideoX's (video then text: shift, scale, gate each); `motion_linear` adds
    the motion stream's three, or, without it (`model.motion_modulation` "even", odd
    blocks), the motion stream takes the video's. The LayerNorm itself is shared, as in
    CogVideoX.
    """

    def __init__(self, time_dim: int, dim: int, motion: bool = True):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(time_dim, 6 * dim)
        self.motion_linear = nn.Linear(time_dim, 3 * dim) if motion else None
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=True)

    def forward(self, streams: list[torch.Tensor | None], temb: torch.Tensor
                ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """streams: [text (B, Lt, D), video (B, Lv, D), motion (B, Lm, D) or None].

        Returns the modulated streams and their gates (B, 1, D), in the same order."""
        e = self.silu(temb)
        shift_v, scale_v, gate_v, shift_t, scale_t, gate_t = self.linear(e).chunk(6, dim=1)
        params = [(shift_t, scale_t, gate_t), (shift_v, scale_v, gate_v)]
        if streams[2] is not None:
            params.append(params[1] if self.motion_linear is None
                          else self.motion_linear(e).chunk(3, dim=1))
        normed: list[torch.Tensor | None] = [None, None, None]
        gates: list[torch.Tensor | None] = [None, None, None]
        for i, (shift, scale, gate) in enumerate(params):
            normed[i] = self.norm(streams[i]) * (1 + scale[:, None]) + shift[:, None]
            gates[i] = gate[:, None]
        return normed, gates


class JointAttention(nn.Module):
    """One multi-head attention over [text, video, motion] with QK-norm and 3D RoPE."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, backend: str):
        super().__init__()
        self.num_heads, self.head_dim, self.backend = num_heads, head_dim, backend
        self.to_q = nn.Linear(dim, num_heads * head_dim)
        self.to_k = nn.Linear(dim, num_heads * head_dim)
        self.to_v = nn.Linear(dim, num_heads * head_dim)
        self.norm_q = nn.LayerNorm(head_dim, eps=QK_NORM_EPS, elementwise_affine=True)
        self.norm_k = nn.LayerNorm(head_dim, eps=QK_NORM_EPS, elementwise_affine=True)
        self.to_out = nn.ModuleList([nn.Linear(num_heads * head_dim, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, rope: Rope, text_len: int, prefix: int | None
                ) -> torch.Tensor:
        """x: (B, L, D) joint sequence; rope: cos, sin (L - text_len, head_dim) for the visual
        tokens; prefix: see `attention` (None = full attention)."""
        B, L, _ = x.shape
        q, k, v = (proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        q, k = self.norm_q(q), self.norm_k(k)
        q = torch.cat([q[:, :, :text_len], apply_rotary_emb(q[:, :, text_len:], rope)], dim=2)
        k = torch.cat([k[:, :, :text_len], apply_rotary_emb(k[:, :, text_len:], rope)], dim=2)
        out = attention(q, k, v, backend=self.backend, prefix=prefix)
        return self.to_out[0](out.transpose(1, 2).reshape(B, L, -1))


class SViMoBlock(nn.Module):
    """Equation 4: tri-modal modulation, joint attention, joint feed-forward, gated residuals."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, time_dim: int, backend: str,
                 motion_modulation: bool = True):
        super().__init__()
        self.norm1 = TriModalNormZero(time_dim, dim, motion_modulation)
        self.attn1 = JointAttention(dim, num_heads, head_dim, backend)
        self.norm2 = TriModalNormZero(time_dim, dim, motion_modulation)
        self.ff = FeedForward(dim, activation_fn="gelu-approximate", bias=True)
        self.gradient_checkpointing = False

    def forward(self, text: torch.Tensor, video: torch.Tensor, motion: torch.Tensor | None,
                temb: torch.Tensor, rope: Rope, prefix: int | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        streams = [text, video, motion]
        lengths = [s.shape[1] for s in streams if s is not None]

        normed, gates = self.norm1(streams, temb)
        out = self.attn1(torch.cat([s for s in normed if s is not None], dim=1), rope,
                         text.shape[1], prefix)
        streams = _gated_add(streams, gates, out.split(lengths, dim=1))

        normed, gates = self.norm2(streams, temb)
        out = self.ff(torch.cat([s for s in normed if s is not None], dim=1))
        text, video, motion = _gated_add(streams, gates, out.split(lengths, dim=1))
        return text, video, motion


def _gated_add(streams: list, gates: list, updates: Iterable[torch.Tensor]) -> list:
    updates = iter(updates)
    return [None if s is None else s + g * next(updates) for s, g in zip(streams, gates, strict=True)]


# ---------------------------------------------------------------------------------------------
# Embeddings and heads
# ---------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """CogVideoX's patch embedding for the video stream plus the text projection."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, text_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.text_proj = nn.Linear(text_dim, dim)


def patchify(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(B, F, C, h, w) -> (B, F * h/p * w/p, D), frame-major then row-major like CogVideoX."""
    B, F = x.shape[:2]
    y = conv(x.flatten(0, 1))                                # (B F, D, h/p, w/p)
    return y.flatten(2).transpose(1, 2).reshape(B, -1, y.shape[1])


def resample_grid(table: torch.Tensor, text_len: int, source: tuple[int, int, int],
                  target: tuple[int, int, int]) -> torch.Tensor:
    """A positional table (1, text_len + prod(source), D) over a (frames, rows, columns) token
    grid -> the same text rows and the visual rows resampled trilinearly to `target`."""
    text, visual = table[:, :text_len], table[:, text_len:]
    grid = visual.reshape(1, *source, -1).permute(0, 4, 1, 2, 3).float()   # (1, D, F, h, w)
    grid = nn.functional.interpolate(grid, size=target, mode="trilinear", align_corners=False)
    visual = grid.permute(0, 2, 3, 4, 1).reshape(1, -1, table.shape[-1]).to(table.dtype)
    return torch.cat([text, visual], dim=1)


def unpatchify(x: torch.Tensor, frames: int, height: int, width: int, p: int) -> torch.Tensor:
    """(B, F * h/p * w/p, p * p * C) -> (B, F, C, h, w)."""
    B = x.shape[0]
    x = x.reshape(B, frames, height // p, width // p, -1, p, p)
    return x.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


class OutputHead(nn.Module):
    """Final LayerNorm, adaptive LayerNorm from the time embedding, linear back to patches."""

    def __init__(self, dim: int, time_dim: int, out_features: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=True)
        self.norm_out = AdaLayerNorm(embedding_dim=time_dim, output_dim=2 * dim,
                                     norm_elementwise_affine=True, norm_eps=NORM_EPS,
                                     chunk_dim=1)
        self.proj_out = nn.Linear(dim, out_features)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.norm_out(self.norm_final(x), temb=temb))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class SViMo(Pretrained):
    """The synchronized video-motion DiT.

    `forward` maps noisy latents + conditions to one prediction per stream (v or x0, as
    `cfg.diffusion.prediction` says; the model does not know which)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.config = cfg
        m, C = cfg.model, cfg.latent.channels
        dim, p = m.hidden_size, m.patch_size
        self.patch_embed = PatchEmbed(2 * C, dim, p, m.text_embed_dim)
        self.motion_patch_embed = nn.Conv2d(2 * C, dim, kernel_size=p, stride=p)
        self.time_proj = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(dim, m.time_embed_dim, act_fn="silu")
        self.transformer_blocks = nn.ModuleList(
            SViMoBlock(dim, m.num_heads, m.head_dim, m.time_embed_dim, m.attention_backend,
                       motion_modulation=m.motion_modulation == "all" or i % 2 == 0)
            for i in range(m.num_layers))
        self.head = OutputHead(dim, m.time_embed_dim, p * p * C)
        self.motion_head = OutputHead(dim, m.time_embed_dim, p * p * C)
        if m.learned_positional_embedding:
            self.register_buffer("pos_embedding", self._sincos_table(), persistent=True)
        else:
            self.pos_embedding = None
        # RoPE and positional tables by token grid: constants, rebuilt only for a new grid
        self._position_cache: dict[tuple, torch.Tensor | Rope] = {}
        self.reset_parameters()
        self.set_gradient_checkpointing(m.gradient_checkpointing)

    # --- set-up --------------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """DiT's initialisation for training from scratch: Xavier linears and patch
        embeddings, zero adaLN modulation (every block starts as the identity) and zero
        output heads. A foundation checkpoint overwrites all of it (`weights.py`).

        One `apply` over the modules, each initialised by itself: DeepSpeed's `zero.Init`
        wraps `apply` to gather a module's partitioned parameters around the call, so the
        same code initialises a model built sharded."""
        zero = {self.head.norm_out.linear, self.head.proj_out, self.motion_head.norm_out.linear,
                self.motion_head.proj_out}
        for block in self.transformer_blocks:
            zero |= {block.norm1.linear, block.norm1.motion_linear, block.norm2.linear,
                     block.norm2.motion_linear} - {None}
        time = {self.time_embedding.linear_1, self.time_embedding.linear_2}
        patches = {self.patch_embed.proj, self.motion_patch_embed}

        def init(module: nn.Module) -> None:
            if module in zero:
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)
            elif module in time:
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear) or module in patches:
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                nn.init.zeros_(module.bias)

        self.apply(init)

    def set_gradient_checkpointing(self, enabled: bool | Iterable[int]) -> None:
        """True/False for every block, or the indices of the blocks to checkpoint."""
        chosen = set(range(len(self.transformer_blocks))) if enabled is True else (
            set() if enabled is False else set(enabled))
        for i, block in enumerate(self.transformer_blocks):
            block.gradient_checkpointing = i in chosen

    def set_motion_mask(self, enabled: bool) -> None:
        """Switch CoInteract's asymmetric mask (`model.motion_attention_mask`) on or off, as
        between its two training stages; recorded in the config that checkpoints carry."""
        model = dataclasses.replace(self.config.model, motion_attention_mask=enabled)
        self.config = dataclasses.replace(self.config, model=model)

    def _sincos_table(self) -> torch.Tensor:
        """CogVideoX's initial positional table for this model's grid: zeros for text, 3D
        sin-cos for the visual tokens, (1, L_text + F h w, D)."""
        f, h, w = self.config.token_grid
        m = self.config.model
        table = get_3d_sincos_pos_embed(m.hidden_size, (w, h), f, POS_SPATIAL_SCALE, 1.0,
                                        output_type="pt").flatten(0, 1).float()
        return torch.cat([table.new_zeros(m.max_text_tokens, m.hidden_size), table])[None]

    def rotary_embedding(self, frames: int, rows: int, cols: int, device: torch.device,
                         streams: int = 1) -> Rope:
        """cos, sin (streams * frames * rows * cols, head_dim) as CogVideoX's pipeline computes
        them: positions stretched over `rope_base_grid` (the foundation's training grid), once
        per stream (motion tokens repeat the video's). Built once per token grid, stream
        count and device, not at every forward."""
        key = (frames, rows, cols, torch.device(device), streams)
        if key not in self._position_cache:
            base_rows, base_cols = self.config.model.rope_base_grid or (rows, cols)
            crops = get_resize_crop_region_for_grid((rows, cols), base_cols, base_rows)
            cos, sin = get_3d_rotary_pos_embed(
                embed_dim=self.config.model.head_dim, crops_coords=crops,
                grid_size=(rows, cols), temporal_size=frames, device=device)
            self._position_cache[key] = (cos.repeat(streams, 1), sin.repeat(streams, 1))
        return self._position_cache[key]

    def positional_table(self, grid: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
        """The learned positional table (1, L_text + F h w, D) at token grid `grid`, in
        `dtype`: resampled from the model's own grid (a training stage at another size) once
        per grid, dtype and state of the table (a load or an update of it starts afresh)."""
        table = self.pos_embedding
        key = (grid, dtype, table.device, table._version, table.data_ptr())
        if key not in self._position_cache:
            resized = table.to(dtype)
            if grid != self.config.token_grid:
                resized = resample_grid(resized, self.config.model.max_text_tokens,
                                        self.config.token_grid, grid)
            self._position_cache[key] = resized
        return self._position_cache[key]

    # --- forward -------------------------------------------------------------------------------

    def forward(self, video: torch.Tensor, image: torch.Tensor, text: torch.Tensor,
                timestep: torch.Tensor, motion: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One denoising prediction.

        Args:
            video: (B, F, C, h, w) noisy video latent z_t^V.
            image: (B, F, C, h, w) reference-image latent z_I, concatenated on channels.
            text: (B, L, D_text) text-encoder features.
            timestep: (B,) diffusion timesteps.
            motion: (B, F, C, h, w) noisy motion latent z_t^M, or None: video-only (only
                exact for a model trained with `motion_attention_mask`).
            guidance: (B, F, C, h, w) interaction guidance z~_0^M, concatenated on channels
                with `motion` (required with it).
        Returns:
            video prediction (B, F, C, h, w) and motion prediction (same) or None.
        """
        # 1. Embeddings: time, text, patches (+ learned positions).
        m = self.config.model
        B, F, _, h, w = video.shape
        p = m.patch_size
        temb = self.time_embedding(self.time_proj(timestep).to(video.dtype))
        text_tokens = self.patch_embed.text_proj(text)
        video_tokens = patchify(self.patch_embed.proj, torch.cat([video, image], dim=2))
        motion_tokens = None
        if motion is not None:
            if guidance is None:
                raise ValueError("the motion stream needs its interaction guidance latent")
            motion_tokens = patchify(self.motion_patch_embed, torch.cat([motion, guidance], 2))
        text_len, num_visual = text_tokens.shape[1], video_tokens.shape[1]
        if self.pos_embedding is not None:
            if text_len != m.max_text_tokens:
                raise ValueError(f"the learned positional table has {m.max_text_tokens} text "
                                 f"positions; got {text_len} text tokens")
            pos = self.positional_table((F, h // p, w // p), video_tokens.dtype)
            text_tokens = text_tokens + pos[:, :text_len]
            video_tokens = video_tokens + pos[:, text_len:]
            if motion_tokens is not None:
                motion_tokens = motion_tokens + pos[:, text_len:]

        # 2. RoPE over the visual tokens; motion repeats the video's positions.
        cos, sin = self.rotary_embedding(F, h // p, w // p, video.device,
                                         streams=1 if motion_tokens is None else 2)
        prefix = (text_len + num_visual
                  if m.motion_attention_mask and motion_tokens is not None else None)

        # 3. Blocks.
        for block in self.transformer_blocks:
            args = (text_tokens, video_tokens, motion_tokens, temb, (cos, sin), prefix)
            if block.gradient_checkpointing and torch.is_grad_enabled():
                text_tokens, video_tokens, motion_tokens = torch.utils.checkpoint.checkpoint(
                    block, *args, use_reentrant=False)
            else:
                text_tokens, video_tokens, motion_tokens = block(*args)

        # 4. Heads, back to latents.
        video_out = unpatchify(self.head(video_tokens, temb), F, h, w, p)
        motion_out = None
        if motion_tokens is not None:
            motion_out = unpatchify(self.motion_head(motion_tokens, temb), F, h, w, p)
        return video_out, motion_out
