"""The small codec of the CPU flavours: a CogVideoX-layout VAE trained on the shards' videos, a
word-level tokenizer of the prompt vocabulary and a small randomly initialised T5 encoder.

They stand in for CogVideoX-5B-I2V's VAE and T5 v1.1 XXL, which are far too large for a CPU.
The VAE has the real one's architecture and compression (8x space, 4x time, 16 channels), so
every downstream shape is the paper's; only widths and depth shrink. The T5 is a frozen feature
extractor: seeded random weights give each prompt distinct features, which is all the DiT needs.

Data is read straight from the Parquet shards with pyarrow, not through Ray Data: the job is one
process that needs every training clip in memory for many epochs (32 small clips are a few MB),
so a streaming, distributed reader would only add a cluster start and a copy.

Output under `cfg.codec.output` (local or s3://): vae/, tokenizer/, text_encoder/ (load them by
setting encoders.vae / encoders.tokenizer / encoders.text_encoder), codec.json (settings,
validation PSNR, latent scaling factor, losses) and reconstruction.png (what the PSNR looks
like: validation frames and their reconstructions).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import imageio.v3 as iio
import numpy as np
import pyarrow.parquet as pq
import torch
from diffusers import AutoencoderKLCogVideoX
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from hoi.config import Config, ConfigError, StorageConfig
from hoi.data.schema import row_to_clip
from hoi.data.shards import READ_COLUMNS, list_shards
from hoi.model.encoders import VideoVAE, to_vae_input
from hoi.storage import join, resolve, write_bytes, write_text
from hoi.vocabulary import ACTIONS, prompt_for

SUMMARY_NAME = "codec.json"
PREVIEW_NAME = "reconstruction.png"
PREVIEW_CLIPS = 3
"""Clips (rows) of the reconstruction picture."""
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Files that mark a saved directory as complete: uploaded after everything else.
_WRITTEN_LAST = ("config.json", "tokenizer_config.json")
# Clips per forward pass when encoding for the scaling factor and the evaluation (no gradients).
_EVAL_BATCH = 4


class CodecError(RuntimeError):
    """The codec cannot be trained: no shards, or no clips in them."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SplitVideos:
    """One split's clips in memory: video and motion_video uint8 (M, N, H, W, 3), M prompts."""

    video: torch.Tensor
    motion_video: torch.Tensor
    prompts: list[str]

    @property
    def both(self) -> torch.Tensor:
        """RGB and motion videos together (2M, N, H, W, 3): the VAE codes both kinds."""
        return torch.cat([self.video, self.motion_video])


def read_split(root: str, split: str, cfg: Config) -> SplitVideos | None:
    """Every clip of `split` under shard root `root` (validated against cfg.data's sizes), or
    None when the split has no shards."""
    try:
        paths = list_shards(root, cfg.storage, split)
    except FileNotFoundError:
        return None
    if not paths:
        return None
    videos, motions, prompts = [], [], []
    for path in paths:
        fs, inner = resolve(path, cfg.storage)
        for row in pq.read_table(inner, filesystem=fs, columns=READ_COLUMNS).to_pylist():
            clip = row_to_clip(row, cfg.data.num_frames, cfg.data.height, cfg.data.width)
            videos.append(torch.from_numpy(clip.video.copy()))
            motions.append(torch.from_numpy(clip.motion_video.copy()))
            prompts.append(clip.prompt)
    if not videos:
        return None
    return SplitVideos(torch.stack(videos), torch.stack(motions), prompts)


# ---------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------


def build_vae(cfg: Config) -> AutoencoderKLCogVideoX:
    """A randomly initialised AutoencoderKLCogVideoX with cfg.latent's compression.

    One down/up block per entry of codec.vae_channels; each block but the last halves H and W,
    the first log2(temporal_compression) also compress time (diffusers' rule)."""
    channels = cfg.codec.vae_channels
    spatial = 2 ** (len(channels) - 1)
    if spatial != cfg.latent.spatial_compression:
        raise ConfigError(f"codec.vae_channels has {len(channels)} blocks: spatial compression "
                          f"{spatial} != latent.spatial_compression "
                          f"{cfg.latent.spatial_compression}")
    return AutoencoderKLCogVideoX(
        block_out_channels=channels, latent_channels=cfg.latent.channels,
        down_block_types=("CogVideoXDownBlock3D",) * len(channels),
        up_block_types=("CogVideoXUpBlock3D",) * len(channels),
        layers_per_block=1, norm_num_groups=_norm_groups(channels),
        # sample_height/width stay diffusers' 480 x 720: they set the tile size when tiling is
        # enabled, and tiles of half our small frames break diffusers' tile blending.
        temporal_compression_ratio=cfg.latent.temporal_compression)


def _norm_groups(channels: Iterable[int]) -> int:
    """GroupNorm groups: the most that divide every block width with >= 8 channels each."""
    width = math.gcd(*channels)
    return max(g for g in range(1, width + 1) if width % g == 0 and width // g >= min(8, width))


def vae_loss(vae: AutoencoderKLCogVideoX, pixels: torch.Tensor, kl_weight: float,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """pixels float (B, 3, N, H, W) in [-1, 1] -> (loss, MSE).

    MSE reconstruction of a posterior sample plus kl_weight x the KL to N(0, I), both means
    per element (pixel, latent value). MSE rather than L1: L1's optimum for the motion videos,
    94 % black, is an all-black frame, where training stalled (PSNR 14.9 dB, exactly black's);
    MSE is also what PSNR measures. The networks may run under bf16 autocast; the loss is
    computed in float32."""
    posterior = vae.encode(pixels).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample.float()
    mean, var, logvar = (t.float() for t in (posterior.mean, posterior.var, posterior.logvar))
    mse = (recon - pixels).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + var - 1.0 - logvar).mean()
    return mse + kl_weight * kl, mse


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where CUDA computes it natively, else None. Not on CPUs, even those with
    native bf16: with torch 2.13 on an Intel Xeon with AMX, bf16 autocast turned the default
    codec's VAE weights to NaN at its second step (fp32 on the same batches learns)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def random_batch(videos: torch.Tensor, batch_size: int, generator: torch.Generator, *,
                 frames: bool = False) -> torch.Tensor:
    """uint8 (M, N, H, W, 3) -> float (B, 3, N, H, W): random clips, or with `frames` random
    single frames of random clips (B, 3, 1, H, W); each mirrored left-right with probability
    1/2 (the only augmentation: a codec must not care about handedness)."""
    index = torch.randint(len(videos), (batch_size,), generator=generator)
    if frames:
        frame = torch.randint(videos.shape[1], (batch_size,), generator=generator)
        batch = videos[index, frame][:, None]
    else:
        batch = videos[index]
    flip = torch.rand(batch_size, generator=generator) < 0.5
    batch[flip] = batch[flip].flip(3)
    return to_vae_input(batch)


def train_vae(vae: AutoencoderKLCogVideoX, videos: torch.Tensor, cfg: Config, *,
              progress: bool = True) -> list[float]:
    """AdamW on random batches of `videos` uint8 (M, N, H, W, 3): codec.frame_steps steps on
    single frames, then codec.steps steps on whole clips, each phase with its own cosine
    learning-rate decay (the last steps at a small rate settle the reconstruction). Returns the
    MSE of every step."""
    codec = cfg.codec
    generator = torch.Generator().manual_seed(codec.seed)
    device = next(vae.parameters()).device
    dtype = autocast_dtype(device)
    vae.train().requires_grad_(True)
    history = []
    phases = [("codec vae frames", codec.frame_steps, codec.frame_batch_size, True),
              ("codec vae clips", codec.steps, codec.batch_size, False)]
    for desc, steps, batch_size, frames in phases:
        if not steps:
            continue
        optimizer = torch.optim.AdamW(vae.parameters(), lr=codec.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=codec.learning_rate * 0.05)
        bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
        for _ in bar:
            pixels = random_batch(videos, batch_size, generator, frames=frames).to(device)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                loss, mse = vae_loss(vae, pixels, codec.kl_weight, generator)
            if not torch.isfinite(loss):
                raise CodecError(f"{desc}: the loss is {loss.item()} at step {len(history) + 1}; "
                                 f"lower codec.learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(mse.item())
            bar.set_postfix(psnr=f"{_psnr(mse.item(), 2.0):.1f}dB")
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def latent_std(vae: AutoencoderKLCogVideoX, videos: torch.Tensor) -> float:
    """Std of the unscaled posterior modes of `videos` uint8 (M, N, H, W, 3)."""
    modes = [vae.encode(to_vae_input(chunk)).latent_dist.mode()
             for chunk in videos.split(_EVAL_BATCH)]
    return torch.cat(modes).float().std().item()


@torch.no_grad()
def reconstruction(vae: VideoVAE, videos: torch.Tensor) -> dict[str, float]:
    """Through the wrapper (posterior mode, uint8 out) for `videos` uint8 (M, N, H, W, 3):
    mean per-clip PSNR (dB) and the MSE in [-1, 1] units (the training loss's)."""
    mses = torch.cat([(vae.decode(vae.encode(chunk)).float() - chunk.float()).pow(2).flatten(1)
                      .mean(1) for chunk in videos.split(_EVAL_BATCH)])
    psnr = sum(_psnr(m, 255.0) for m in mses.tolist()) / len(mses)
    return {"psnr_db": psnr, "mse": mses.mean().item() / 127.5**2}


@torch.no_grad()
def reconstruction_picture(vae: VideoVAE, videos: SplitVideos) -> np.ndarray:
    """(rows * H, 4 * W, 3) uint8: for the first PREVIEW_CLIPS clips, the middle frame of the
    RGB video, its reconstruction, the motion video and its reconstruction."""
    columns = []
    for clips in (videos.video[:PREVIEW_CLIPS], videos.motion_video[:PREVIEW_CLIPS]):
        middle = clips.shape[1] // 2
        columns += [clips[:, middle], vae.decode(vae.encode(clips))[:, middle].to(torch.uint8)]
    rows = torch.cat(columns, dim=2)  # (clips, H, 4 W, 3)
    return rows.flatten(0, 1).numpy()


def _psnr(mse: float, peak_to_peak: float) -> float:
    return 10 * math.log10(peak_to_peak**2 / max(mse, 1e-12))


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def prompt_vocabulary(extra: Iterable[str] = ()) -> list[str]:
    """Every synthetic prompt (each action with each of its targets and tools) plus `extra`
    (the shards' prompts: TACO's may use other words), sorted and deduplicated."""
    synthetic = {prompt_for(action, target, tool)
                 for action, (tools, targets) in ACTIONS.items()
                 for tool in tools for target in targets}
    return sorted(synthetic | set(extra))


def build_tokenizer(prompts: Iterable[str], max_tokens: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of `prompts`' words, T5-like: lower-cased, <pad> = 0, </s> = 1
    appended to every sequence, <unk> = 2 for words outside the vocabulary."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
    tok.train_from_iterator(list(prompts), trainers.WordLevelTrainer(
        special_tokens=[PAD, EOS, UNK], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK, model_max_length=max_tokens)


def build_text_encoder(cfg: Config, vocab_size: int) -> T5EncoderModel:
    """A T5 encoder of width model.text_embed_dim with codec.text_layers / text_heads; its
    random initial weights come from the global RNG (seed it around the call)."""
    width, heads = cfg.model.text_embed_dim, cfg.codec.text_heads
    if width % heads:
        raise ConfigError(f"model.text_embed_dim {width} is not a multiple of codec.text_heads "
                          f"{heads}")
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=width, d_kv=width // heads, d_ff=4 * width,
        num_layers=cfg.codec.text_layers, num_heads=heads, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def save_pretrained(obj: Any, path: str, storage: StorageConfig) -> None:
    """`obj.save_pretrained` to a local or s3:// directory, file by file and atomically, the
    config file last so that a directory with a config is complete."""
    with tempfile.TemporaryDirectory(prefix="svimo-codec-") as tmp:
        obj.save_pretrained(tmp)
        names = sorted((os.path.relpath(os.path.join(d, f), tmp) for d, _, files in os.walk(tmp)
                        for f in files), key=lambda name: (name in _WRITTEN_LAST, name))
        for name in names:
            with open(os.path.join(tmp, name), "rb") as f:
                write_bytes(join(path, name), f.read(), storage)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def run(cfg: Config, *, progress: bool = True) -> dict[str, Any]:
    """Train and save the codec; returns the summary also written to <output>/codec.json.

    1. read the training (and validation) clips; 2. train the VAE; 3. set its scaling factor
    to 1 / std of the training latents; 4. measure reconstruction on the validation clips
    (the training clips when there are none); 5. build the tokenizer and T5; 6. save."""
    start = time.monotonic()
    codec = cfg.codec
    # 1. Data.
    train = read_split(codec.shards, "train", cfg)
    if train is None:
        raise CodecError(f"no training clips under {codec.shards!r}/train: run jobs/prepare.py "
                         f"first or set codec.shards")
    val = read_split(codec.shards, "val", cfg)
    evaluated = val if val is not None else train
    # 2. VAE, seeded without touching the caller's global RNG.
    with torch.random.fork_rng():
        torch.manual_seed(codec.seed)
        vae = build_vae(cfg)
    before = reconstruction(VideoVAE(vae), evaluated.both)
    history = train_vae(vae, train.both, cfg, progress=progress)
    # 3. Scaled latents of unit variance, like diffusion VAEs.
    std = latent_std(vae, train.both)
    vae.register_to_config(scaling_factor=1.0 / std)
    # 4. Reconstruction quality, RGB and motion video apart.
    wrapped = VideoVAE(vae)
    after = {name: reconstruction(wrapped, getattr(evaluated, name))
             for name in ("video", "motion_video")}
    picture = reconstruction_picture(wrapped, evaluated)
    write_bytes(join(codec.output, PREVIEW_NAME),
                iio.imwrite("<bytes>", picture, extension=".png"), cfg.storage)
    # 5. Text.
    vocabulary = prompt_vocabulary(train.prompts + (val.prompts if val is not None else []))
    tokenizer = build_tokenizer(vocabulary, cfg.model.max_text_tokens)
    with torch.random.fork_rng():
        torch.manual_seed(codec.seed)
        text_encoder = build_text_encoder(cfg, len(tokenizer))
    # 6. Save: the three directories, then the summary.
    paths = {name: join(codec.output, name) for name in ("vae", "tokenizer", "text_encoder")}
    save_pretrained(vae, paths["vae"], cfg.storage)
    save_pretrained(tokenizer, paths["tokenizer"], cfg.storage)
    save_pretrained(text_encoder, paths["text_encoder"], cfg.storage)
    summary = {
        "paths": paths,
        "settings": {**dataclasses.asdict(codec), "flavour": cfg.flavour,
                     "data": dataclasses.asdict(cfg.data), "latent": dataclasses.asdict(cfg.latent),
                     "text_embed_dim": cfg.model.text_embed_dim,
                     "max_text_tokens": cfg.model.max_text_tokens},
        "clips": {"train": len(train.prompts), "val": len(val.prompts) if val is not None else 0},
        "evaluated_on": "val" if val is not None else "train",
        "psnr_db": {name: m["psnr_db"] for name, m in after.items()},
        "mse": {"before": before["mse"],
                "after": sum(m["mse"] for m in after.values()) / len(after),
                "first_steps": _mean(history[:10]), "last_steps": _mean(history[-10:])},
        "precision": str(autocast_dtype(torch.device("cpu")) or torch.float32),
        "scaling_factor": 1.0 / std,
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "vocabulary_size": len(tokenizer),
        "seconds": round(time.monotonic() - start, 1),
    }
    text = json.dumps(summary, indent=2)
    write_text(join(codec.output, SUMMARY_NAME), text, cfg.storage)
    return json.loads(text)  # as a reader of codec.json sees it (lists, not tuples)


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))
