"""The sections of the jobs and of where they run: codec, prepare, train, sample, local,
ablation, evaluate, serve, storage and Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hoi.config.base import ConfigError, require
from hoi.vocabulary import check_holdout


@dataclass
class CodecConfig:
    """`jobs/train_codec.py`: the small VAE, tokenizer and T5 that CPU flavours encode with."""

    output: str = "outputs/codec"
    """Directory that receives vae/, tokenizer/ and text_encoder/ (local or s3://)."""
    shards: str = "outputs/shards"
    """Shards whose training clips the VAE learns from."""
    asset: str | None = None
    """A codec trained before (a codec.output of this job, local or s3://) to copy to
    codec.output instead of training one, when it fits: its codec.json records this config's
    frame size, latent and text sizes, and its tokenizer knows the shards' prompts
    (`hoi.codec.job.asset_misfit`); otherwise the job says why and trains."""
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
    foreground_weight: float = 10.0
    """Extra weight of a foreground pixel's error (`hoi.codec.vae.vae_loss`): a motion video's
    skeleton against its black canvas."""
    text_layers: int = 2
    """T5 encoder layers (d_model is model.text_embed_dim)."""
    text_heads: int = 4
    """T5 attention heads."""
    seed: int = 0
    """Seed of the initial weights and of batch order."""

    def __post_init__(self) -> None:
        require(self.steps >= 1 and self.batch_size >= 1, "codec.steps/batch_size must be >= 1")
        require(self.frame_steps >= 0 and self.frame_batch_size >= 1,
                 "codec.frame_steps must be >= 0 and codec.frame_batch_size >= 1")
        require(len(self.vae_channels) >= 1, "codec.vae_channels needs at least one block")
        require(self.foreground_weight >= 0, "codec.foreground_weight must be >= 0")


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
    encode: bool = False
    """Then run the encode pass (`hoi.train.latents`): the train and val clips' VAE latents
    and T5 features at every training stage's size, with the configured encoders (on an actor
    pool sized by train.encode_actors/encode_cpus/encode_gpus), into <output>/latents; a
    training run on these shards then reads them instead of encoding."""

    def __post_init__(self) -> None:
        require(self.num_train >= 0 and self.num_val >= 0 and self.num_heldout >= 0,
                 "prepare.num_train/num_val/num_heldout must be >= 0")
        require(not self.num_heldout or self.holdout is not None,
                 "prepare.num_heldout needs prepare.holdout (an \"<action>:<target>\")")
        if self.holdout is not None:
            try:
                check_holdout(self.holdout)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        require(self.clips_per_shard >= 1, "prepare.clips_per_shard must be at least 1")
        require(self.num_preview >= 0, "prepare.num_preview must be >= 0")
        require(self.concurrency is None or self.concurrency >= 1,
                 "prepare.concurrency must be at least 1 (or null)")
        if self.source == "taco":
            require(bool(self.taco_root) and bool(self.mano_root),
                     "prepare.source=taco needs prepare.taco_root and prepare.mano_root")


@dataclass
class TrainConfig:
    """`jobs/train.py`: Ray Train + DeepSpeed training of SViMo and VID from shards."""

    shards: str = "outputs/shards"
    """Shard root whose train split is streamed (local or s3://)."""
    init_from: str | None = None
    """What training starts from (local or s3://): a diffusers CogVideoX I2V transformer
    directory, which initialises SViMo (`hoi.model.weights.load_cogvideox`; VID starts
    fresh), or a trained SViMo model as `sample.model` names one (an exported model
    directory: pipeline.json, svimo/, vid/, e.g. the shipped foundation; a checkpoint; a
    run, its latest checkpoint), which initialises both; None: random
    initial weights. A resumed run starts from its checkpoint instead."""
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
    validate_every: int | None = None
    """Every this many steps (and at the last), every rank samples the first `validate_clips`
    clips of <shards>/val in joint mode (the ZeRO-3 partitions take part together) and rank 0
    logs their PSNR, MPJPE and preview to TensorBoard and MLflow; None: no validation."""
    validate_clips: int = 2
    """Validation clips sampled each time (the same ones every time)."""
    validate_steps: int = 10
    """Denoising steps of a validation sample."""
    lora_rank: int = 0
    """LoRA fine-tuning of SViMo with adapters of this rank on `lora_targets` (its other
    foundation weights frozen, the motion stream's own parameters trained in full;
    `hoi.train.lora`); 0: full fine-tuning."""
    lora_alpha: float | None = None
    """LoRA's alpha (the adapters are scaled by alpha / rank); None: the rank (scale 1)."""
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj",
                                     "ff.net.2")
    """SViMo's Linear layers that get adapters, by the end of their names: the attention and
    feed-forward projections of every block."""
    tensorboard: bool = True
    """TensorBoard event files of every logged row, from rank 0, under
    <storage_path>/<run_name>/tensorboard/ (local or s3://)."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (http(s)://..., databricks, sqlite:///...) to log the same rows and
    the run config to; None: no MLflow."""
    mlflow_experiment: str = "svimo"
    """MLflow experiment of the run (created when missing)."""
    max_failures: int = 2
    """Worker-group restarts (from the latest checkpoint) before the run fails."""
    seed: int = 0
    """Seed of the initial weights, the noise and the data order."""

    def __post_init__(self) -> None:
        require(self.steps >= 1, "train.steps must be >= 1")
        require(self.stop_at_step is None or 1 <= self.stop_at_step <= self.steps,
                 "train.stop_at_step must be in [1, train.steps] (or null)")
        require(self.batch_size >= 1 and self.gradient_accumulation >= 1,
                 "train.batch_size and train.gradient_accumulation must be >= 1")
        require(self.num_workers >= 1 and self.encode_actors >= 1,
                 "train.num_workers and train.encode_actors must be >= 1")
        require(min(self.cpus_per_worker, self.read_cpus, self.encode_cpus, self.encode_gpus)
                 >= 0, "train.cpus_per_worker, read_cpus, encode_cpus, encode_gpus must be >= 0")
        require(self.zero_stage is None or 0 <= self.zero_stage <= 3,
                 "train.zero_stage must be 0, 1, 2 or 3 (or null)")
        require(0.0 <= self.ema_decay < 1.0, "train.ema_decay must be in [0, 1)")
        require(self.checkpoint_every >= 1 and self.keep_checkpoints >= 1 and self.log_every >= 1,
                 "train.checkpoint_every, keep_checkpoints and log_every must be >= 1")
        require(self.max_failures >= -1, "train.max_failures must be >= -1 (-1: unlimited)")
        require(self.lora_rank >= 0 and (self.lora_alpha is None or self.lora_alpha > 0)
                and bool(self.lora_targets),
                "train.lora_rank must be >= 0, train.lora_alpha > 0 (or null), and "
                "train.lora_targets not empty")
        require((self.validate_every is None or self.validate_every >= 1)
                and self.validate_clips >= 1 and self.validate_steps >= 1,
                "train.validate_every (or null), validate_clips and validate_steps must be >= 1")
        for row in self.stages:
            require(len(row) == 3 and all(v > 0 for v in row),
                     f"train.stages rows are [height, width, steps] > 0, got {list(row)}")
        if self.stages:
            total = sum(row[2] for row in self.stages)
            require(total == self.steps,
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
    """SamplingActor actors, each holding one copy of the model."""
    cpus_per_actor: float = 1.0
    """CPUs reserved by each sampler actor."""
    gpus_per_actor: float = 0.0
    """GPUs of each sampler actor (svimo-5b: 1). Decided here, not from the GPUs a cluster
    has at the moment: on an autoscaling cluster that is 0 until an actor asks for one."""

    def __post_init__(self) -> None:
        require(self.num_steps >= 1 and self.max_steps >= self.num_steps,
                 "sample.num_steps must be >= 1 and <= sample.max_steps")
        require(self.mode in MODE_NAMES,
                 f"sample.mode {self.mode!r} is not one of {list(MODE_NAMES)}")
        require(self.concurrency >= 1, "sample.concurrency must be >= 1")
        require(self.cpus_per_actor >= 0 and self.gpus_per_actor >= 0,
                 "sample.cpus_per_actor and gpus_per_actor must be >= 0")


@dataclass
class LocalConfig:
    """`jobs/train_local.py`: SViMo + VID trained with the closed loop in one process, no Ray
    (train.steps, batch_size, learning_rate, warmup_steps, weight_decay, gradient_clipping and
    seed; the clips at prepare.output), then sampled in every mode on validation clips
    (sample.num_steps)."""

    output: str = "outputs/local"
    """Directory receiving the networks, history.json, metrics.json and previews/."""
    mask_steps: int = 100
    """Steps with the asymmetric motion mask after train.steps (CoInteract's second stage),
    saved as svimo-masked/ and vid-masked/ for the video-only mode; 0: none."""
    eval_clips: int = 4
    """Validation clips sampled in each mode."""

    def __post_init__(self) -> None:
        require(self.mask_steps >= 0 and self.eval_clips >= 1,
                 "local.mask_steps must be >= 0 and local.eval_clips >= 1")


ABLATION_MODELS = ("full", "guidance_only", "gradient_only", "no_vid", "separate",
                   "even_layers", "lora")
"""The rows of the paper's tables 3 and 4, by the model directory each is evaluated from."""


@dataclass
class AblationConfig:
    """`jobs/ablation.py`: the paper's tables 3 and 4 at small scale. VID warms up once for
    loop.vid_warmup_steps (with train.seed); every variant then trains on from it for
    `joint_steps`, with train.batch_size and learning_rate, once per training seed of
    `seeds`; evaluation as `evaluate`."""

    output: str = "outputs/ablation"
    """Directory receiving models/, results.md, results.csv and the plots."""
    joint_steps: int = 500
    """Closed-loop steps of each variant after the shared warm-up."""
    models: tuple[str, ...] = ABLATION_MODELS
    """The rows to run (a subset of ABLATION_MODELS)."""
    lora_rank: int = 16
    """Adapter rank of table 4's LoRA row (train.lora_alpha and lora_targets apply)."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds of the joint steps (batches, t, noise): each variant is trained and
    evaluated once per seed, and the report gives means and standard errors over them."""

    def __post_init__(self) -> None:
        require(self.joint_steps >= 1 and self.lora_rank >= 1,
                 "ablation.joint_steps and ablation.lora_rank must be >= 1")
        require(bool(self.seeds) and len(set(self.seeds)) == len(self.seeds),
                 f"ablation.seeds must be distinct and at least one, not {list(self.seeds)}")
        unknown = sorted(set(self.models) - set(ABLATION_MODELS))
        require(bool(self.models) and not unknown,
                 f"ablation.models: unknown {unknown}; choose from {list(ABLATION_MODELS)}")


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
        require(self.mode in ("joint", "video_to_motion"),
                 "evaluate.mode must be joint or video_to_motion")
        require(len(self.seeds) >= 1 and self.num_steps >= 1 and self.concurrency >= 1,
                 "evaluate.seeds must not be empty; num_steps and concurrency >= 1")
        require(self.limit is None or self.limit >= 1, "evaluate.limit must be >= 1 (or null)")


@dataclass
class ServeConfig:
    """The `svimo` Ray Serve app (`serve run serve.app:svimo`)."""

    model: str | None = None
    """What to serve (local or s3://), as sample.model; None: <train.storage_path>/<train.run_name>."""
    results: str = "outputs/serve"
    """Where each generation's files go, <results>/<id>/ (local or s3://; replicas share it)."""
    broker: str = "redis://127.0.0.1:6379/0"
    """The Redis that holds the queue (Celery's broker) and every job's state and progress
    (`serve.jobs`), reachable from every replica; run it with append-only persistence."""
    queue: str = "svimo"
    """The broker queue's name, also the prefix of the jobs' keys (apps may share a Redis)."""
    ingress_replicas: int = 1
    """SViMoAPI replicas (HTTP): any number, every job still runs once."""
    min_replicas: int = 1
    """SamplingReplica replicas kept when idle (0: none while the queue is empty)."""
    max_replicas: int = 2
    """SamplingReplica replicas at most under load."""
    target_ongoing_requests: float = 1.0
    """Jobs (queued + running) per replica the autoscaler aims for (a replica runs one at a
    time)."""
    queue_poll_s: float = 5.0
    """How often the autoscaler reads the jobs queued and running."""
    lease_s: float = 60.0
    """A running job whose sampler has not beaten for this long is queued again (a beat every
    lease_s / 6 s, also during a step), then failed after its second attempt."""
    reap_every_s: float = 5.0
    """How often each ingress replica looks for such jobs."""
    keep_finished_s: int = 7 * 24 * 3600
    """How long a finished job's status is answered (its files stay in serve.results)."""
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
    api_keys: str | None = None
    """A file of hashed API keys (local or s3://; `python -m serve.keys add`): every route but
    the page, /healthz, /v1/config and the docs then wants a key as a bearer token, and a
    generation is reachable only with the key that submitted it. None: no keys."""
    max_queued_per_key: int = 8
    """Jobs queued or running per API key, where its line in the keys file names none."""
    max_image_bytes: int = 10_000_000
    """Largest accepted image upload in bytes."""
    max_image_pixels: int = 16_000_000
    """Largest accepted image, or video frame, in pixels (width x height), checked before
    decoding."""
    max_video_bytes: int = 64_000_000
    """Largest accepted video upload (video_to_motion) in bytes."""
    max_motion_bytes: int = 8_000_000
    """Largest accepted motion upload (motion_to_video: .npz or motion.json) in bytes."""

    def __post_init__(self) -> None:
        require(0 <= self.min_replicas <= self.max_replicas and self.max_replicas >= 1,
                 "serve.min_replicas must be >= 0 and <= serve.max_replicas (>= 1)")
        require(self.broker.startswith(("redis://", "rediss://")),
                "serve.broker must be a redis:// or rediss:// URL")
        require(self.ingress_replicas >= 1 and self.max_queued_per_key >= 1,
                "serve.ingress_replicas and serve.max_queued_per_key must be >= 1")
        require(self.lease_s > 0 and self.reap_every_s > 0 and self.queue_poll_s > 0
                and self.keep_finished_s > 0,
                "serve.lease_s, reap_every_s, queue_poll_s and keep_finished_s must be > 0")
        require(self.target_ongoing_requests > 0 and self.max_queued >= 1,
                 "serve.target_ongoing_requests must be > 0 and serve.max_queued >= 1")
        require(min(self.max_image_bytes, self.max_image_pixels, self.max_video_bytes,
                    self.max_motion_bytes) > 0,
                 "serve.max_image_bytes, max_image_pixels, max_video_bytes and "
                 "max_motion_bytes must be > 0")


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
