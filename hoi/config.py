"""Typed configuration: one tree of dataclasses, named flavours, YAML run files, strict overrides.

A run's configuration is built in three layers, each overriding the one before:

1. the flavour (``svimo-tiny``, ``svimo-small``, ``svimo-5b``): sizes of data and model;
2. a YAML run file (``configs/*.yaml``), nested like the tree below;
3. command-line overrides of existing fields, ``--data.num_frames 13`` or ``--data.num_frames=13``.

Every key must name an existing field: a typo is an error that names the nearest valid key.
Derived quantities (latent shape, tokens per stream, sequence length) live here and only here.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hoi.vocabulary import check_holdout


class ConfigError(ValueError):
    """A configuration that cannot be built: unknown key, wrong type or an impossible value."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# ---------------------------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------------------------


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
        _require(self.height > 0 and self.width > 0, "data.height and data.width must be positive")
        _require(self.num_frames >= 1, "data.num_frames must be at least 1")
        _require(self.fps > 0, "data.fps must be positive")
        _require(0 < self.fov_y_deg < 180, "data.fov_y_deg must be in (0, 180)")


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
            _require(getattr(self, name) >= 1, f"latent.{name} must be at least 1")


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
    gradient_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (switchable per block)."""

    def __post_init__(self) -> None:
        for name in ("patch_size", "num_layers", "num_heads", "head_dim", "time_embed_dim",
                     "text_embed_dim", "max_text_tokens"):
            _require(getattr(self, name) >= 1, f"model.{name} must be at least 1")
        _require(self.head_dim % 8 == 0, "model.head_dim must be a multiple of 8 (3D RoPE split)")
        _require(self.rope_base_grid is None or min(self.rope_base_grid) >= 1,
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
    gradient_checkpointing: bool = False
    """Recompute encoder stages and transformer layers in the backward pass."""

    def __post_init__(self) -> None:
        _require(self.hidden_size % self.num_heads == 0,
                 "vid.hidden_size must be a multiple of vid.num_heads")
        _require(len(self.encoder_channels) >= 1, "vid.encoder_channels needs at least one scale")
        _require(self.coord_scale > 0, "vid.coord_scale must be positive")


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
        _require(self.num_train_timesteps >= 2, "diffusion.num_train_timesteps must be >= 2")
        _require(1 <= self.num_inference_steps <= self.num_train_timesteps,
                 "diffusion.num_inference_steps must be in [1, num_train_timesteps]")
        _require(0.0 <= self.condition_dropout < 1.0, "diffusion.condition_dropout must be in [0, 1)")
        _require(self.guidance_scale >= 1.0, "diffusion.guidance_scale must be >= 1")


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
        _require(self.svimo_weight >= 0 and self.vid_weight >= 0, "loop weights must be >= 0")
        _require(self.vid_warmup_steps >= 0, "loop.vid_warmup_steps must be >= 0")
        _require(0.0 <= self.vid_warmup_clean <= 1.0, "loop.vid_warmup_clean must be in [0, 1]")


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


@dataclass
class CodecConfig:
    """`jobs/train_codec.py`: the small VAE, tokenizer and T5 that CPU flavours encode with."""

    output: str = "outputs/codec"
    """Directory that receives vae/, tokenizer/ and text_encoder/ (local or s3://)."""
    shards: str = "outputs/shards"
    """Shards whose training clips the VAE learns from."""
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)
    """block_out_channels of the AutoencoderKLCogVideoX (one per down/up block)."""
    frame_steps: int = 600
    """Optimiser steps of the first phase, on single frames: spatial coding is learned there at
    a fraction of a clip step's cost (the first frame of a CogVideoX latent is coded alone)."""
    frame_batch_size: int = 16
    """Frames per first-phase step."""
    steps: int = 300
    """Optimiser steps of the second phase, on whole clips (time compression)."""
    batch_size: int = 2
    """Clips per second-phase step."""
    learning_rate: float = 1e-3
    """AdamW learning rate."""
    kl_weight: float = 1e-6
    """Weight of the KL term against the reconstruction loss."""
    text_layers: int = 2
    """T5 encoder layers (d_model is model.text_embed_dim)."""
    text_heads: int = 4
    """T5 attention heads."""
    seed: int = 0
    """Seed of the initial weights and of batch order."""

    def __post_init__(self) -> None:
        _require(self.steps >= 1 and self.batch_size >= 1, "codec.steps/batch_size must be >= 1")
        _require(self.frame_steps >= 0 and self.frame_batch_size >= 1,
                 "codec.frame_steps must be >= 0 and codec.frame_batch_size >= 1")
        _require(len(self.vae_channels) >= 1, "codec.vae_channels needs at least one block")


@dataclass
class PrepareConfig:
    """`jobs/prepare.py`: where clips come from and where shards go."""

    output: str = "outputs/shards"
    """Shard directory, a local path or s3://bucket/prefix."""
    source: Literal["synthetic", "taco"] = "synthetic"
    """Generate synthetic clips or convert a TACO directory."""
    taco_root: str | None = None
    """Root of a TACO-layout directory (source=taco)."""
    mano_root: str | None = None
    """Directory with the user's MANO_LEFT.pkl and MANO_RIGHT.pkl (source=taco)."""
    taco_split_file: str | None = None
    """TACO's "<sequence>,<split>" list (source=taco); without it every sequence is train."""
    num_train: int = 32
    """Training clips to generate (synthetic)."""
    num_val: int = 8
    """Validation clips to generate (synthetic), from seeds disjoint from training."""
    holdout: str | None = None
    """An "<action>:<target>" combination (e.g. "scoop:cup") kept out of train and val, for a
    generalisation test (synthetic); None: every combination may appear."""
    num_heldout: int = 0
    """Clips of the held-out combination to generate into the "heldout" split (synthetic)."""
    clips_per_shard: int = 8
    """Rows per Parquet shard; a shard is the unit of work and of resumption."""
    seed: int = 0
    """Base seed; every clip's seed is derived from it, its split and its index."""
    video_encoding: Literal["raw", "mp4"] = "raw"
    """How frames are stored: lossless uint8 arrays, or MP4 bytes (needed at 416 x 624)."""
    num_preview: int = 3
    """Clips written as side-by-side previews next to the shards (0 for none)."""
    concurrency: int | None = None
    """Parallel render tasks; None lets Ray Data decide from the cluster's CPUs."""

    def __post_init__(self) -> None:
        _require(self.num_train >= 0 and self.num_val >= 0 and self.num_heldout >= 0,
                 "prepare.num_train/num_val/num_heldout must be >= 0")
        _require(not self.num_heldout or self.holdout is not None,
                 "prepare.num_heldout needs prepare.holdout (an \"<action>:<target>\")")
        if self.holdout is not None:
            try:
                check_holdout(self.holdout)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        _require(self.clips_per_shard >= 1, "prepare.clips_per_shard must be at least 1")
        _require(self.num_preview >= 0, "prepare.num_preview must be >= 0")
        _require(self.concurrency is None or self.concurrency >= 1,
                 "prepare.concurrency must be at least 1 (or null)")
        if self.source == "taco":
            _require(bool(self.taco_root) and bool(self.mano_root),
                     "prepare.source=taco needs prepare.taco_root and prepare.mano_root")


@dataclass
class TrainConfig:
    """`jobs/train.py`: Ray Train + DeepSpeed training of SViMo and VID from shards."""

    shards: str = "outputs/shards"
    """Shard root whose train split is streamed (local or s3://)."""
    init_from: str | None = None
    """A diffusers CogVideoX I2V transformer directory (local or s3://) that initialises
    SViMo (`hoi.model.weights.load_cogvideox`); None: random initial weights."""
    run_name: str = "svimo"
    """Run directory under storage_path; rerunning with the same name resumes the run."""
    storage_path: str = "outputs/runs"
    """Where checkpoints, metrics and exported weights go (local or s3://)."""
    steps: int = 200
    """Optimiser steps in all (VID warm-up included)."""
    stop_at_step: int | None = None
    """End this run after that optimiser step, with a checkpoint there (a time-limited
    allocation, a planned pause); the learning-rate schedule and the stages still span
    `steps`, and running the same run name again continues. None: run to `steps`."""
    stages: tuple[tuple[int, ...], ...] = ()
    """Resolution stages as [height, width, steps] rows run in order, steps summing to
    `steps` (the paper: 240 x 368 then 416 x 624); empty: one stage at data.height x width.
    Clips are resized to each stage's size as they stream."""
    batch_size: int = 2
    """Clips per worker per micro-step (DeepSpeed's train_micro_batch_size_per_gpu)."""
    gradient_accumulation: int = 1
    """Micro-steps per optimiser step."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate, reached after warmup_steps and decayed to 10 % by cosine."""
    warmup_steps: int = 20
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    gradient_clipping: float = 1.0
    """Global gradient-norm clip (0: none)."""
    zero_stage: int | None = None
    """DeepSpeed ZeRO stage (0-3); None: 3 on GPU, 2 on CPU."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training precision; auto: bf16 on GPU, fp32 on CPU."""
    ema_decay: float = 0.0
    """Decay of an exponential moving average of the weights, exported instead of the raw
    weights when > 0 (e.g. 0.999); 0: no EMA."""
    num_workers: int = 1
    """Ray Train workers (one per GPU on GPU clusters)."""
    use_gpu: bool = False
    """One GPU per worker."""
    accelerator_type: str | None = None
    """The GPU model (Ray's accelerator type: A100, H100, L40S, ...) that train workers and
    encoder actors run on, which keeps them off a cluster's other GPU nodes (Serve's); the
    node type must offer the `accelerator_type:<model>` resource. None: any node."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How Ray places the workers on nodes: PACK fills a node's GPUs first (NVLink within a
    node); STRICT_SPREAD puts each worker on its own node."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per train worker. Leave CPUs for the data pipeline: a 2-core machine
    with 2 workers needs fractions (see ENVIRONMENT.md: the Ray Data deadlock)."""
    read_cpus: float = 0.25
    """CPUs reserved by each Parquet read + decode task of the data pipeline."""
    encode_cpus: float = 0.5
    """CPUs reserved by each data-pipeline actor that runs the frozen VAE and T5."""
    encode_gpus: float = 0.0
    """GPUs (fractions allowed) of each encoding actor; > 0 on GPU clusters."""
    encode_actors: int = 1
    """Encoding actors (each holds one copy of the VAE and T5)."""
    prefetch_batches: int = 2
    """Batches each worker's iterator encodes ahead of the step."""
    checkpoint_every: int = 50
    """Optimiser steps between checkpoints (the last step always checkpoints)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in storage (the oldest are deleted)."""
    log_every: int = 5
    """Optimiser steps between reported metrics."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one worker's device, the denominator of MFU; None: known GPUs'
    bf16 peak (H100/H200 989, A100 312), and no MFU on CPUs."""
    max_failures: int = 2
    """Worker-group restarts (from the latest checkpoint) before the run fails."""
    seed: int = 0
    """Seed of the initial weights, the noise and the data order."""

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "train.steps must be >= 1")
        _require(self.stop_at_step is None or 1 <= self.stop_at_step <= self.steps,
                 "train.stop_at_step must be in [1, train.steps] (or null)")
        _require(self.batch_size >= 1 and self.gradient_accumulation >= 1,
                 "train.batch_size and train.gradient_accumulation must be >= 1")
        _require(self.num_workers >= 1 and self.encode_actors >= 1,
                 "train.num_workers and train.encode_actors must be >= 1")
        _require(min(self.cpus_per_worker, self.read_cpus, self.encode_cpus, self.encode_gpus)
                 >= 0, "train.cpus_per_worker, read_cpus, encode_cpus, encode_gpus must be >= 0")
        _require(self.zero_stage is None or 0 <= self.zero_stage <= 3,
                 "train.zero_stage must be 0, 1, 2 or 3 (or null)")
        _require(0.0 <= self.ema_decay < 1.0, "train.ema_decay must be in [0, 1)")
        _require(self.checkpoint_every >= 1 and self.keep_checkpoints >= 1 and self.log_every >= 1,
                 "train.checkpoint_every, keep_checkpoints and log_every must be >= 1")
        _require(self.max_failures >= -1, "train.max_failures must be >= -1 (-1: unlimited)")
        for row in self.stages:
            _require(len(row) == 3 and all(v > 0 for v in row),
                     f"train.stages rows are [height, width, steps] > 0, got {list(row)}")
        if self.stages:
            total = sum(row[2] for row in self.stages)
            _require(total == self.steps,
                     f"train.stages' steps sum to {total}, but train.steps is {self.steps}")


MODE_NAMES = ("joint", "motion_to_video", "video_to_motion", "video_only")


@dataclass
class SampleConfig:
    """`jobs/sample.py` (batch sampling through Ray Data) and the sampler's defaults."""

    model: str | None = None
    """What to sample from (local or s3://): a training run directory (its latest complete
    checkpoint), one checkpoint, or an exported model/ directory. None: the run this config
    trains, <train.storage_path>/<train.run_name>."""
    input: str | None = None
    """Requests, one per row: a .jsonl, .csv or .parquet file (local or s3://) with columns
    id, image (path or s3:// URI), prompt and optionally seed, num_steps, guidance_scale, mode,
    motion (an .npz with joints and points, for motion_to_video) and video (an .mp4, for
    video_to_motion)."""
    output: str = "outputs/samples"
    """Directory receiving <id>/ per request and manifest.jsonl (local or s3://)."""
    num_steps: int = 50
    """Denoising steps when a request gives none."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale when a request gives none; None: diffusion.guidance_scale."""
    mode: str = "joint"
    """Sampling mode when a request gives none: joint, motion_to_video, video_to_motion or
    video_only."""
    seed: int = 0
    """Seed when a request gives none."""
    max_steps: int = 1000
    """Largest num_steps a request may ask for."""
    concurrency: int = 1
    """Sampler actors, each holding one copy of the model."""
    cpus_per_actor: float = 1.0
    """CPUs reserved by each sampler actor."""
    gpus_per_actor: float = 0.0
    """GPUs of each sampler actor (svimo-5b: 1). Decided here, not from the GPUs a cluster
    has at the moment: on an autoscaling cluster that is 0 until an actor asks for one."""

    def __post_init__(self) -> None:
        _require(self.num_steps >= 1 and self.max_steps >= self.num_steps,
                 "sample.num_steps must be >= 1 and <= sample.max_steps")
        _require(self.mode in MODE_NAMES,
                 f"sample.mode {self.mode!r} is not one of {list(MODE_NAMES)}")
        _require(self.concurrency >= 1, "sample.concurrency must be >= 1")
        _require(self.cpus_per_actor >= 0 and self.gpus_per_actor >= 0,
                 "sample.cpus_per_actor and gpus_per_actor must be >= 0")


@dataclass
class EvaluateConfig:
    """`jobs/evaluate.py`: sample held-out clips with a model and score them."""

    model: str | None = None
    """What to evaluate, as sample.model; None: <train.storage_path>/<train.run_name>."""
    shards: str | None = None
    """Shard root of the held-out clips (local or s3://); None: train.shards."""
    split: str = "val"
    """The split evaluated."""
    limit: int | None = None
    """Clips evaluated at most (None: all of the split)."""
    seeds: tuple[int, ...] = (0,)
    """One sample per clip and seed."""
    num_steps: int = 50
    """Denoising steps per sample."""
    mode: str = "joint"
    """Sampling mode: joint or video_to_motion (the clip's video given)."""
    output: str = "outputs/eval"
    """Where table.md, table.csv, clips.csv and the plots go (local or s3://)."""
    name: str | None = None
    """The table row's name; None: the model directory's checkpoint name."""
    dino: str | None = None
    """A transformers ViTModel directory of DINO ViT-B/16 weights (subject consistency; local
    or s3://); None: that column is left empty."""
    clip: str | None = None
    """A transformers CLIPModel directory (background consistency; local or s3://); None:
    left empty."""
    i3d: str | None = None
    """A TorchScript I3D file (FVD; local or s3://); None: left empty."""
    motion_autoencoder: str | None = None
    """The interaction FID's motion autoencoder directory; trained on the train split's motions
    and saved there when missing; None: <output>/motion_autoencoder."""
    autoencoder_steps: int = 500
    """Training steps of the motion autoencoder when it has to be trained (about 0.13 s each
    on one CPU core at svimo-small)."""
    concurrency: int = 1
    """Evaluation actors, each holding one copy of the model."""
    cpus_per_actor: float = 1.0
    """CPUs reserved by each evaluation actor."""
    gpus_per_actor: float = 0.0
    """GPUs of each evaluation actor (svimo-5b: 1), as sample.gpus_per_actor."""

    def __post_init__(self) -> None:
        _require(self.mode in ("joint", "video_to_motion"),
                 "evaluate.mode must be joint or video_to_motion")
        _require(len(self.seeds) >= 1 and self.num_steps >= 1 and self.concurrency >= 1,
                 "evaluate.seeds must not be empty; num_steps and concurrency >= 1")
        _require(self.limit is None or self.limit >= 1, "evaluate.limit must be >= 1 (or null)")


@dataclass
class ServeConfig:
    """The `svimo` Ray Serve app (`serve run serve.app:svimo`)."""

    model: str | None = None
    """What to serve (local or s3://), as sample.model; None: <train.storage_path>/<train.run_name>."""
    results: str = "outputs/serve"
    """Where each generation's files go, <results>/<id>/ (local or s3://; replicas share it)."""
    min_replicas: int = 1
    """Sampler replicas kept when idle."""
    max_replicas: int = 2
    """Sampler replicas at most under load."""
    target_ongoing_requests: float = 1.0
    """Generations per replica the autoscaler aims for (a replica runs one at a time)."""
    upscale_delay_s: float = 5.0
    """Seconds of sustained load before a replica is added (generations take minutes)."""
    downscale_delay_s: float = 120.0
    """Seconds of low load before a replica is removed."""
    max_queued: int = 32
    """Generations waiting or running beyond which submissions get 429 + Retry-After."""
    replica_cpus: float = 1.0
    """CPUs reserved by each sampler replica."""
    replica_gpus: float = 0.0
    """GPUs of each sampler replica (svimo-5b: 1), as sample.gpus_per_actor."""
    accelerator_type: str | None = None
    """The GPU model the sampler replicas run on (as train.accelerator_type), which keeps
    them off a cluster's training nodes; None: any node."""
    max_image_bytes: int = 10_000_000
    """Largest accepted image upload in bytes."""
    max_image_pixels: int = 16_000_000
    """Largest accepted image in pixels (width x height), checked before decoding."""

    def __post_init__(self) -> None:
        _require(1 <= self.min_replicas <= self.max_replicas,
                 "serve.min_replicas must be >= 1 and <= serve.max_replicas")
        _require(self.target_ongoing_requests > 0 and self.max_queued >= 1,
                 "serve.target_ongoing_requests must be > 0 and serve.max_queued >= 1")
        _require(self.max_image_bytes > 0 and self.max_image_pixels > 0,
                 "serve.max_image_bytes and max_image_pixels must be > 0")


@dataclass
class StorageConfig:
    """How s3:// paths are reached. Credentials come from the usual AWS chain."""

    endpoint_url: str | None = None
    """S3-compatible endpoint (e.g. http://127.0.0.1:9000); None means AWS itself."""
    region: str | None = None
    """Region of the S3 client; None: the bucket's own (asked once per bucket, as the S3 API
    answers any request for it), else the AWS configuration's (AWS_REGION, ~/.aws/config)."""


@dataclass
class RayConfig:
    """Which Ray cluster a job runs on."""

    address: str | None = None
    """None: the cluster of `ray job submit` (RAY_ADDRESS) if any, else a new local instance.
    'auto' joins a running `ray start` cluster; 'ray://host:port' a remote one."""
    num_cpus: int | None = None
    """CPUs of a new local instance (None: all of this machine's)."""


@dataclass
class Config:
    """The whole run configuration."""

    flavour: str = "svimo-tiny"
    """Named size preset the run started from (recorded, not re-applied)."""
    data: DataConfig = field(default_factory=DataConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vid: VIDConfig = field(default_factory=VIDConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        _require(self.flavour in FLAVOURS,
                 f"unknown flavour {self.flavour!r}; choose one of {sorted(FLAVOURS)}")
        d, lat = self.data, self.latent
        _require((d.num_frames - 1) % lat.temporal_compression == 0,
                 f"data.num_frames - 1 = {d.num_frames - 1} is not a multiple of "
                 f"latent.temporal_compression = {lat.temporal_compression}")
        pixels_per_token = lat.spatial_compression * self.model.patch_size
        for name in ("height", "width"):
            _require(getattr(d, name) % pixels_per_token == 0,
                     f"data.{name} = {getattr(d, name)} is not a multiple of "
                     f"latent.spatial_compression x model.patch_size = {pixels_per_token}")
        for height, width, _ in self.train.stages:
            _require(height % pixels_per_token == 0 and width % pixels_per_token == 0,
                     f"train.stages size {height} x {width} is not a multiple of "
                     f"latent.spatial_compression x model.patch_size = {pixels_per_token}")

    def train_stages(self) -> list[tuple[int, int, int]]:
        """(height, width, steps) of each resolution stage, in order."""
        if self.train.stages:
            return [tuple(row) for row in self.train.stages]
        return [(self.data.height, self.data.width, self.train.steps)]

    def model_path(self, path: str | None) -> str:
        """`path`, or the run this config trains (<train.storage_path>/<train.run_name>)."""
        if path is not None:
            return path
        return f"{self.train.storage_path.rstrip('/')}/{self.train.run_name}"

    def at_size(self, height: int, width: int) -> Config:
        """This config with data.height x width replaced (a resolution stage's view)."""
        return dataclasses.replace(self, data=dataclasses.replace(self.data, height=height,
                                                                   width=width))

    # --- derived quantities: the one place they are computed ---------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(frames, height, width) of a video latent: 13 x 52 x 78 for svimo-5b."""
        d, lat = self.data, self.latent
        return ((d.num_frames - 1) // lat.temporal_compression + 1,
                d.height // lat.spatial_compression, d.width // lat.spatial_compression)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(frames, rows, columns) of patch tokens per stream: 13 x 26 x 39 for svimo-5b."""
        f, h, w = self.latent_shape
        p = self.model.patch_size
        return f, h // p, w // p

    @property
    def tokens_per_stream(self) -> int:
        """Tokens of the video stream, and equally of the motion stream."""
        f, h, w = self.token_grid
        return f * h * w

    @property
    def sequence_length(self) -> int:
        """Joint attention length: text + video + motion tokens (26,590 for svimo-5b)."""
        return self.model.max_text_tokens + 2 * self.tokens_per_stream

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists (tuples become lists), as JSON and YAML write them back."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Flavours: deltas over the dataclass defaults (which are svimo-tiny)
# ---------------------------------------------------------------------------------------------

FLAVOURS: dict[str, dict[str, Any]] = {
    # Seconds on CPU: the test flavour.
    "svimo-tiny": {},
    # Learns visibly on 2 CPU cores in minutes.
    "svimo-small": {
        "data": {"height": 64, "width": 96, "num_frames": 17},
        "model": {"num_layers": 4, "num_heads": 4, "head_dim": 32, "time_embed_dim": 64,
                  "text_embed_dim": 64, "max_text_tokens": 16},
        "vid": {"hidden_size": 128, "num_layers": 4, "num_heads": 4,
                "encoder_channels": [64, 128]},
        # No video backbone to start from (docs/model.md, session 9): x0-prediction, which
        # leaves no amplified noise in the last steps, and SViMo's video stream pre-trained
        # during VID's warm-up.
        "diffusion": {"prediction": "x0"},
        "loop": {"svimo_warmup": True},
        "train": {"batch_size": 4, "learning_rate": 1e-3},
    },
    # The paper's exact sizes (SPEC section 2).
    "svimo-5b": {
        "data": {"height": 416, "width": 624, "num_frames": 49},
        "model": {"num_layers": 42, "num_heads": 48, "head_dim": 64, "time_embed_dim": 512,
                  "text_embed_dim": 4096, "max_text_tokens": 226,
                  "learned_positional_embedding": True, "rope_base_grid": [30, 45],
                  "gradient_checkpointing": True},
        "vid": {"hidden_size": 512, "num_layers": 8, "num_heads": 8,
                "encoder_channels": [128, 256, 512], "gradient_checkpointing": True},
        "loop": {"vid_warmup_steps": 5000},
        "prepare": {"video_encoding": "mp4"},
        # SPEC: ZeRO-3, bf16 (auto on GPU), micro-batch 4 per 80 GB GPU, 5k warm-up + 30k
        # steps at 240 x 368, then 5k at 416 x 624
        # Sampling, evaluation and serving on one GPU each.
        "sample": {"gpus_per_actor": 1.0},
        "evaluate": {"gpus_per_actor": 1.0},
        "serve": {"replica_gpus": 1.0},
        # The VAE and T5 encode on GPUs, in bf16 (in fp32 on CPUs they would starve training).
        "train": {"steps": 40000, "stages": [[240, 368, 35000], [416, 624, 5000]],
                  "batch_size": 4, "use_gpu": True, "cpus_per_worker": 4.0,
                  "encode_gpus": 0.5, "encode_cpus": 4.0,
                  "checkpoint_every": 500, "log_every": 10},
    },
}


# ---------------------------------------------------------------------------------------------
# Building: dicts -> dataclasses, strictly
# ---------------------------------------------------------------------------------------------


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted keys of the tree, e.g. ['flavour', 'data.height', ...]."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += valid_keys(hint, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_key_error(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the annotation `hint`, converting where the meaning is plain."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        _require(value in args, f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        _require(isinstance(value, (list, tuple)), f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[]") for v in value)
    if hint is bool:
        _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool),
                 f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot before the e) as a string
        _require(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        _require(isinstance(value, (str, int, float)) and not isinstance(value, bool),
                 f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported annotation {hint!r}")


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key_error(f"{prefix}{key}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a dataclass given where a plain value was expected
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from e


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """['--data.num_frames', '13', '--prepare.output=s3://b/p'] -> nested dict.

    Values are read as YAML scalars ('13' -> 13, 'true' -> True, 'null' -> None, '[a, b]')."""
    nested: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"expected an override like --data.num_frames 13, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} has no value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        if key not in valid_keys():
            raise _unknown_key_error(key)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                flavour: str | None = None) -> Config:
    """Flavour defaults <- YAML file <- command-line overrides, validated once at the end.

    The flavour is taken from `flavour`, else the overrides' --flavour, else the file's
    `flavour:` key, else svimo-tiny."""
    file_values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        file_values = yaml.safe_load(text) or {}
        if not isinstance(file_values, dict):
            raise ConfigError(f"{path}: a run file must be a YAML mapping")
    cli_values = parse_overrides(overrides or [])
    name = flavour or cli_values.get("flavour") or file_values.get("flavour") or "svimo-tiny"
    if name not in FLAVOURS:
        raise ConfigError(f"unknown flavour {name!r}; choose one of {sorted(FLAVOURS)}")
    merged = _merge(_merge(FLAVOURS[name], file_values), cli_values)
    merged["flavour"] = name
    return from_dict(Config, merged)
