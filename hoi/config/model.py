"""The sections that say what a model is: its data, latents, networks, diffusion, closed loop
and encoders (`hoi.artifacts.MODEL_SECTIONS`: what an exported network keeps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hoi.config.base import require


@dataclass
class DataConfig:
    """Clip geometry: what every clip, real or synthetic, looks like once prepared."""

    height: int = 32
    """Video height H in pixels; a multiple of latent.spatial_compression x model.patch_size."""
    width: int = 48
    """Video width W in pixels; same rule as height. The paper uses 3:2 (416 x 624)."""
    num_frames: int = 9
    """Frames N per clip; N - 1 must be a multiple of latent.temporal_compression."""
    fps: float = 8.0
    """Frame rate of prepared clips (the paper resamples TACO to 8 fps)."""
    fov_y_deg: float = 48.0
    """Vertical field of view of the synthetic clips' camera, and of the camera that renders
    generated motion when the caller gives no intrinsics."""

    def __post_init__(self) -> None:
        require(self.height > 0 and self.width > 0, "data.height and data.width must be positive")
        require(self.num_frames >= 1, "data.num_frames must be at least 1")
        require(self.fps > 0, "data.fps must be positive")
        require(0 < self.fov_y_deg < 180, "data.fov_y_deg must be in (0, 180)")


@dataclass
class LatentConfig:
    """The video VAE's compression (CogVideoX 3D VAE by default)."""

    temporal_compression: int = 4
    """Frames per latent frame after the first: latent frames = (N - 1) / this + 1."""
    spatial_compression: int = 8
    """Pixels per latent pixel along height and width."""
    channels: int = 16
    """Latent channels d_VAE."""

    def __post_init__(self) -> None:
        for name in ("temporal_compression", "spatial_compression", "channels"):
            require(getattr(self, name) >= 1, f"latent.{name} must be at least 1")


@dataclass
class ModelConfig:
    """Sizes of the synchronized video-motion DiT (the model issue adds the rest)."""

    patch_size: int = 2
    """Spatial patch size of the video and motion patch embeddings."""
    num_layers: int = 2
    """DiT blocks."""
    num_heads: int = 2
    """Attention heads per block."""
    head_dim: int = 16
    """Channels per attention head; hidden size = num_heads x head_dim."""
    time_embed_dim: int = 32
    """Width of the timestep embedding that drives the adaptive modulation."""
    text_embed_dim: int = 32
    """Width of the text encoder's features (4096 for T5 v1.1 XXL)."""
    max_text_tokens: int = 8
    """Text tokens per prompt after padding/truncation (226 in CogVideoX)."""
    learned_positional_embedding: bool = False
    """Add CogVideoX-5B-I2V's positional table to text + video (+ motion) tokens; loaded from
    a foundation checkpoint, it is resampled to this model's token grid (docs/model.md)."""
    rope_base_grid: tuple[int, int] | None = None
    """(rows, columns) that RoPE positions are stretched over, as in CogVideoX's pipeline
    (30 x 45 for CogVideoX-5B); None: the model's own token grid."""
    attention_backend: Literal["sdpa", "flash", "math"] = "sdpa"
    """Attention kernel: PyTorch SDPA, flash_attn (GPU, when installed) or the plain math path."""
    motion_attention_mask: bool = False
    """CoInteract's asymmetric co-attention: text and video queries do not attend to motion
    keys, so the motion stream can be dropped at inference (fast video-only mode)."""
    motion_modulation: Literal["all", "even"] = "all"
    """Blocks with the motion stream's own adaLN modulation: every block (the paper's
    default), or the even-indexed ones only (blocks 0, 2, ...: the paper's "Only Even
    Layers", table 4), where the others modulate the motion tokens with the video's."""
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (switchable per block)."""

    def __post_init__(self) -> None:
        for name in ("patch_size", "num_layers", "num_heads", "head_dim", "time_embed_dim",
                     "text_embed_dim", "max_text_tokens"):
            require(getattr(self, name) >= 1, f"model.{name} must be at least 1")
        require(self.head_dim % 8 == 0, "model.head_dim must be a multiple of 8 (3D RoPE split)")
        require(self.rope_base_grid is None or min(self.rope_base_grid) >= 1,
                 "model.rope_base_grid must be positive")

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim


@dataclass
class VIDConfig:
    """Vision-aware 3D interaction diffusion (VID): denoises hand joints and object points."""

    hidden_size: int = 64
    """Width of the motion transformer."""
    num_layers: int = 2
    """Transformer layers (self-attention, cross-attention to video features, feed-forward)."""
    num_heads: int = 4
    """Attention heads."""
    encoder_channels: tuple[int, ...] = (32, 64)
    """Channels of the 3D-conv latent encoders, one per scale (each scale halves H and W)."""
    tokens: Literal["entity", "frame"] = "entity"
    """Denoiser tokens per video frame: one per entity (left hand, right hand, tool, target)
    or one for the whole frame."""
    coord_center: tuple[float, float, float] = (0.0, 0.0, 0.5)
    """Camera-frame point (m) that motion coordinates are centred on before diffusion."""
    coord_scale: float = 0.1
    """Metres per unit of normalised motion coordinates."""
    motion_modulation: Literal["all", "even"] = "all"
    """Blocks with the motion stream's own adaLN modulation: every block (the paper's
    default), or the even-indexed ones only (blocks 0, 2, ...: the paper's "Only Even
    Layers", table 4), where the others modulate the motion tokens with the video's."""
    gradient_checkpointing: bool = False
    """Recompute encoder stages and transformer layers in the backward pass."""

    def __post_init__(self) -> None:
        require(self.hidden_size % self.num_heads == 0,
                 "vid.hidden_size must be a multiple of vid.num_heads")
        require(len(self.encoder_channels) >= 1, "vid.encoder_channels needs at least one scale")
        require(self.coord_scale > 0, "vid.coord_scale must be positive")


@dataclass
class DiffusionConfig:
    """Noise schedule, parameterisation and sampling (SPEC section 3)."""

    num_train_timesteps: int = 1000
    """T, shared by the latents and the 3D motion."""
    beta_schedule: Literal["scaled_linear", "linear", "squaredcos_cap_v2"] = "scaled_linear"
    """diffusers beta schedule (CogVideoX: scaled_linear from 0.00085 to 0.012)."""
    beta_start: float = 0.00085
    beta_end: float = 0.012
    zero_terminal_snr: bool = True
    """Rescale betas to zero terminal SNR, as CogVideoX's scheduler does."""
    prediction: Literal["v", "x0"] = "v"
    """What the DiT predicts (CogVideoX: v). VID always predicts x0; losses work in x0 space."""
    sampler: Literal["ddim", "ddpm"] = "ddim"
    """Posterior step of the sampler: DDPM (equation 3) or DDIM (fewer steps)."""
    num_inference_steps: int = 50
    """Sampling steps."""
    guidance_scale: float = 1.0
    """Classifier-free guidance on text and image; 1 disables it (one DiT pass per step)."""
    condition_dropout: float = 0.1
    """Training probability of dropping text and image together (for classifier-free guidance)."""
    image_latent: Literal["repeat", "first_frame"] = "repeat"
    """Reference-image latent on every latent frame (paper) or first frame + zeros (CogVideoX)."""
    image_noise_log_sigma: tuple[float, float] = (-3.0, 0.5)
    """Mean and std of log sigma of the noise added to the reference image (CogVideoX I2V);
    sampling uses sigma = exp(mean)."""

    def __post_init__(self) -> None:
        require(self.num_train_timesteps >= 2, "diffusion.num_train_timesteps must be >= 2")
        require(1 <= self.num_inference_steps <= self.num_train_timesteps,
                 "diffusion.num_inference_steps must be in [1, num_train_timesteps]")
        require(0.0 <= self.condition_dropout < 1.0, "diffusion.condition_dropout must be in [0, 1)")
        require(self.guidance_scale >= 1.0, "diffusion.guidance_scale must be >= 1")


@dataclass
class LoopConfig:
    """The closed loop between SViMo and VID (paper section 3.5, algorithm 1)."""

    variant: Literal["full", "no_vid", "guidance_only", "gradient_only", "video_model",
                     "motion_model"] = "full"
    """Ablations of table 3: both pathways, no VID, interaction guidance only, gradient
    constraint only; and the two halves of "VModel w/ Pred. Mot.": a video model (video loss
    only, the ground-truth motion latent in the guidance slot) and a motion model (motion loss
    only, the video stream pure noise, so that it sees the reference image but no video).
    VID trains in every variant's warm-up; it reads the final latents for the 3D motion."""
    svimo_weight: float = 1.0
    """w1 on L_SViMo."""
    vid_weight: float = 0.05
    """w2 on L_VID."""
    vid_warmup_steps: int = 0
    """Warm-up steps before the joint phase (5k in the paper): VID alone, or with SViMo's
    video stream (`svimo_warmup`)."""
    vid_warmup_clean: float = 0.5
    """Share of warm-up clips whose latents reach VID clean (z_0) instead of noised to the
    motion's t. On noised latents alone VID learns to ignore them (at high t they are noise,
    at low t the motion itself says more); clean ones are what SViMo's x0 predictions, which
    VID reads in the joint phase and at sampling, converge to."""
    svimo_warmup: bool = False
    """Train SViMo's video stream during VID's warm-up, as the video model does (video loss,
    the clip's true motion latent as guidance). For models trained from scratch: a foundation
    checkpoint already brings a video model, and the paper warms VID up alone."""

    def __post_init__(self) -> None:
        require(self.svimo_weight >= 0 and self.vid_weight >= 0, "loop weights must be >= 0")
        require(self.vid_warmup_steps >= 0, "loop.vid_warmup_steps must be >= 0")
        require(0.0 <= self.vid_warmup_clean <= 1.0, "loop.vid_warmup_clean must be in [0, 1]")


@dataclass
class EncodersConfig:
    """Frozen encoders, loaded from paths the user gives (local or s3://); nothing downloads."""

    vae: str | None = None
    """Directory of an AutoencoderKLCogVideoX (diffusers layout: config.json + weights)."""
    text_encoder: str | None = None
    """Directory of a T5EncoderModel (transformers layout)."""
    tokenizer: str | None = None
    """Directory of its tokenizer (transformers layout)."""
    vae_slicing: bool = True
    """Encode/decode one clip of a batch at a time (less memory)."""
    vae_tiling: bool = False
    """Encode/decode in overlapping spatial tiles (for large frames on small GPUs)."""
