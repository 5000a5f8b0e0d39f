"""Frozen encoders: the CogVideoX video VAE and the T5 text encoder, loaded from user paths.

Nothing here downloads: a path is a local directory or an s3:// prefix (copied to a temporary
local directory, since `from_pretrained` reads local files only). The real models are
CogVideoX-5B-I2V's VAE and T5 v1.1 XXL (4096-d); the CPU flavours use the small ones that
`jobs/train_codec.py` builds.

Layouts (see /work/notes/contract.md):

- videos are uint8 (B, N, H, W, 3), as renderers and shards give them;
- the VAE itself sees floats in [-1, 1] as (B, 3, N, H, W) (diffusers layout);
- latents are (B, F, C, h, w), frames first like CogVideoX's transformer input, of about unit
  variance: multiplied by the VAE's ``config.scaling_factor`` (CogVideoX's rule), or, where
  the VAE directory holds per-channel statistics (`LATENT_STATS`, written by
  `jobs/train_codec.py`), standardised channel by channel with the statistics of their stream:
  RGB videos (``video``) and rendered motion videos (``motion``) apart.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch
from diffusers import AutoencoderKLCogVideoX
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5EncoderModel

from hoi.config import Config, ConfigError, StorageConfig
from hoi.storage import list_files, local_dir, resolve

Device = torch.device | str | None

STREAMS = ("video", "motion")
"""What a latent codes: an RGB video, or a rendered motion video."""
LATENT_STATS = "latent_stats.json"
"""Per-channel statistics of a VAE's latents, by stream, in its directory:
{"video": {"mean": [C], "std": [C]}, "motion": {...}} of the unscaled posterior modes."""

# ---------------------------------------------------------------------------------------------
# Pixel layouts
# ---------------------------------------------------------------------------------------------


def to_vae_input(video: torch.Tensor) -> torch.Tensor:
    """uint8 (B, N, H, W, 3) -> float32 (B, 3, N, H, W) in [-1, 1]."""
    if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"expected a uint8 video (B, N, H, W, 3), got {video.dtype} "
                         f"{tuple(video.shape)}")
    return video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def from_vae_output(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, N, H, W), nominally in [-1, 1] -> uint8 (B, N, H, W, 3) (clamped, rounded)."""
    pixels = ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# Video VAE
# ---------------------------------------------------------------------------------------------


class VideoVAE:
    """A frozen `AutoencoderKLCogVideoX` behind uint8 videos and (B, F, C, h, w) latents.

    A plain object rather than an `nn.Module`, so that it never ends up in a trained
    network's state_dict or optimiser by being assigned as an attribute.
    """

    def __init__(self, vae: AutoencoderKLCogVideoX,
                 stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """stats: per stream (`STREAMS`), the mean and std (C,) of the unscaled latents, with
        which latents are standardised channel by channel instead of scaled by
        `scaling_factor`; None: scaled (a CogVideoX VAE)."""
        self.vae = vae.eval().requires_grad_(False)
        if stats is not None:
            channels = int(vae.config.latent_channels)
            for stream in STREAMS:
                mean, std = stats[stream]
                if (mean.shape, std.shape) != ((channels,),) * 2 or not bool((std > 0).all()):
                    raise ValueError(f"latent statistics of {stream!r} must be {channels} means "
                                     f"and {channels} positive stds")
        self.stats = stats

    @classmethod
    def load(cls, path: str, storage: StorageConfig, *, slicing: bool, tiling: bool,
             device: Device = None, dtype: torch.dtype | None = None) -> VideoVAE:
        """From a diffusers directory (config.json + weights), local or s3://.

        slicing: encode/decode one clip of a batch at a time; tiling: in overlapping spatial
        tiles. Raises FileNotFoundError naming `path` when nothing is there."""
        with local_dir(path, storage) as local:
            _require_file(local, "config.json", path, "AutoencoderKLCogVideoX")
            # torch_dtype rather than .to(dtype): diffusers keeps modules that must stay in
            # float32 there; low_cpu_mem_usage=False because accelerate is not a dependency.
            vae = AutoencoderKLCogVideoX.from_pretrained(
                local, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False)
            stats = _read_stats(os.path.join(local, LATENT_STATS))
        if slicing:
            vae.enable_slicing()
        if tiling:
            vae.enable_tiling()
        return cls(vae.to(device), stats)

    def save_pretrained(self, directory: str) -> None:
        """The VAE's diffusers files, and its latent statistics when it has them."""
        self.vae.save_pretrained(directory)
        if self.stats is not None:
            with open(os.path.join(directory, LATENT_STATS), "w") as f:
                json.dump({stream: {"mean": mean.tolist(), "std": std.tolist()}
                           for stream, (mean, std) in self.stats.items()}, f, indent=1)

    def to(self, device: Device = None, dtype: torch.dtype | None = None) -> VideoVAE:
        self.vae.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_compression(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None, *,
               stream: str = "video") -> torch.Tensor:
        """uint8 (B, N, H, W, 3) -> scaled latents (B, F, C, h, w) on the VAE's device, in its
        dtype; F = (N - 1) / temporal_compression + 1. stream: what the video is (`STREAMS`),
        whose statistics standardise the latents.

        The posterior's mode, or a sample drawn with `generator` when one is given."""
        return self._encode_pixels(to_vae_input(video.to(self.device)), generator, stream)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, noise_sigma: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> scaled latents (B, 1, C, h, w) of the image as a 1-frame video.

        noise_sigma (B,): std of Gaussian noise added in [-1, 1] pixel space before encoding
        (CogVideoX I2V's noise augmentation of the reference image); the noise is drawn with
        `generator`, which then also samples the posterior (as CogVideoX's I2V fine-tuning
        does). Without noise and generator this equals `encode` of the 1-frame video."""
        pixels = to_vae_input(image[:, None].to(self.device))
        if noise_sigma is not None and generator is not None:
            sigma = noise_sigma.to(pixels).reshape(-1, 1, 1, 1, 1)
            noise = torch.randn(pixels.shape, generator=generator, device=generator.device)
            pixels = pixels + sigma * noise.to(pixels)
        elif noise_sigma is not None and bool((noise_sigma != 0).any()):
            raise ValueError("noise_sigma > 0 needs a generator to draw the noise with")
        return self._encode_pixels(pixels, generator, "video")

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, stream: str = "video") -> torch.Tensor:
        """Scaled latents (B, F, C, h, w) of `stream` -> uint8 video (B, N, H, W, 3) on the
        VAE's device, N = temporal_compression x (F - 1) + 1."""
        z = latents.to(device=self.device, dtype=self.dtype).permute(0, 2, 1, 3, 4)
        shift, scale = self._affine(stream, z)
        return from_vae_output(self.vae.decode(z / scale + shift).sample)

    def _encode_pixels(self, pixels: torch.Tensor, generator: torch.Generator | None,
                       stream: str) -> torch.Tensor:
        """float (B, 3, N, H, W) in [-1, 1] -> scaled latents (B, F, C, h, w)."""
        posterior = self.vae.encode(pixels.to(device=self.device, dtype=self.dtype)).latent_dist
        z = posterior.mode() if generator is None else posterior.sample(generator)
        shift, scale = self._affine(stream, z)
        return ((z - shift) * scale).permute(0, 2, 1, 3, 4).contiguous()

    def _affine(self, stream: str, like: torch.Tensor
                ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """`stream`'s latents are (z - shift) x scale of the unscaled ones z: its mean and 1 /
        std, shaped (1, C, 1, 1, 1) on `like`'s device and dtype, or 0 and scaling_factor for a
        VAE without statistics (exactly CogVideoX's pipelines' scaling)."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        if self.stats is None:
            return 0.0, self.scaling_factor
        mean, std = self.stats[stream]
        return mean.to(like).reshape(1, -1, 1, 1, 1), 1.0 / std.to(like).reshape(1, -1, 1, 1, 1)


def _read_stats(path: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """`LATENT_STATS` at `path`, or None where the VAE has none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        stats = json.load(f)
    try:
        return {stream: (torch.tensor(stats[stream]["mean"], dtype=torch.float32),
                         torch.tensor(stats[stream]["std"], dtype=torch.float32))
                for stream in STREAMS}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} must hold a mean and a std for each of {STREAMS}") from e


# ---------------------------------------------------------------------------------------------
# Text encoder
# ---------------------------------------------------------------------------------------------


class TextEncoder:
    """A frozen T5 encoder and its tokenizer: prompts -> (B, max_tokens, D) features."""

    def __init__(self, model: T5EncoderModel, tokenizer: PreTrainedTokenizerBase,
                 max_tokens: int) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def load(cls, text_encoder_path: str, tokenizer_path: str, storage: StorageConfig, *,
             max_tokens: int, device: Device = None,
             dtype: torch.dtype | None = None) -> TextEncoder:
        """From transformers directories, local or s3://; FileNotFoundError names a missing one."""
        tokenizer = load_tokenizer(tokenizer_path, storage)
        with local_dir(text_encoder_path, storage) as local:
            _require_file(local, "config.json", text_encoder_path, "T5EncoderModel")
            model = T5EncoderModel.from_pretrained(local, local_files_only=True, dtype=dtype)
        return cls(model.to(device), tokenizer, max_tokens)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, max_tokens, D) in the model's dtype.

        As CogVideoX's pipeline (`_get_t5_prompt_embeds`): padded to max_tokens, truncated,
        special tokens (EOS) added, and T5 run on the ids *without* an attention mask, so the
        pad positions carry features too and the DiT sees them all."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_tokens,
                             truncation=True, add_special_tokens=True,
                             return_tensors="pt").input_ids
        return self.model(ids.to(self.model.device))[0]


def load_tokenizer(path: str, storage: StorageConfig) -> PreTrainedTokenizerBase:
    """A transformers tokenizer directory, local or s3://."""
    with local_dir(path, storage) as local:
        _require_file(local, "tokenizer_config.json", path, "tokenizer")
        return AutoTokenizer.from_pretrained(local, local_files_only=True)


def count_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str) -> int:
    """Tokens `TextEncoder.encode` would feed T5 for `prompt` before truncation (EOS
    included)."""
    return len(tokenizer(prompt, add_special_tokens=True).input_ids)


# ---------------------------------------------------------------------------------------------
# Loading both from the config
# ---------------------------------------------------------------------------------------------


def load_encoders(cfg: Config, device: Device = None,
                  dtype: torch.dtype | None = None) -> tuple[VideoVAE, TextEncoder]:
    """The VAE and text encoder at cfg.encoders' paths, checked against the config's sizes.

    Raises ConfigError when a path is unset or a model does not fit the config (latent
    channels, compression, text width), FileNotFoundError when a path holds nothing."""
    enc = cfg.encoders
    unset = [name for name in ("vae", "tokenizer", "text_encoder") if getattr(enc, name) is None]
    if unset:
        raise ConfigError(
            f"encoders.{', encoders.'.join(unset)} not set: give the directories of your VAE, "
            f"tokenizer and T5 (local or s3://), or build small ones with "
            f"`python jobs/train_codec.py --flavour {cfg.flavour}` and set encoders.vae, "
            f"encoders.tokenizer, encoders.text_encoder to <codec.output>/vae, /tokenizer, "
            f"/text_encoder")
    vae = VideoVAE.load(enc.vae, cfg.storage, slicing=enc.vae_slicing, tiling=enc.vae_tiling,
                        device=device, dtype=dtype)
    text = TextEncoder.load(enc.text_encoder, enc.tokenizer, cfg.storage,
                            max_tokens=cfg.model.max_text_tokens, device=device, dtype=dtype)
    _check_fit(cfg, vae, text)
    return vae, text


FINGERPRINT_BYTES = 1 << 20
"""Bytes read from each end of an encoder file for its fingerprint."""


def encoders_identity(cfg: Config) -> dict[str, str]:
    """What latents made with the configured encoders depend on: the VAE, tokenizer and T5
    paths, and a fingerprint of their files (`fingerprint`), for latents' manifests."""
    enc = cfg.encoders
    paths = {"vae": enc.vae, "tokenizer": enc.tokenizer, "text_encoder": enc.text_encoder}
    if None in paths.values():
        raise ConfigError("encoders.vae, encoders.tokenizer and encoders.text_encoder must be set")
    return paths | {"fingerprint": fingerprint(list(paths.values()), cfg.storage)}


def fingerprint(directories: list[str], storage: StorageConfig) -> str:
    """sha256 over every file of the directories (local or s3://): its name, size, and its
    first and last `FINGERPRINT_BYTES` (a T5 XXL is 19 GB: this reads a few MB of it, in
    ranged reads on S3). Weights that differ anywhere but in their middle bytes differ here;
    a safetensors or pickle file's header (every tensor's name, shape and offset) is at its
    start."""
    digest = hashlib.sha256()
    for directory in directories:
        fs, inner = resolve(directory, storage)
        for name in list_files(directory, storage):
            with fs.open_input_file(f"{inner.rstrip('/')}/{name}") as f:
                size = f.size()
                head = f.read_at(min(size, FINGERPRINT_BYTES), 0)
                tail = f.read_at(min(size, FINGERPRINT_BYTES), max(0, size - FINGERPRINT_BYTES))
            digest.update(f"{name}\0{size}\0".encode())
            digest.update(head)
            digest.update(tail)
    return digest.hexdigest()


def _check_fit(cfg: Config, vae: VideoVAE, text: TextEncoder) -> None:
    expected = {"latent channels": (vae.latent_channels, cfg.latent.channels),
                "spatial compression": (vae.spatial_compression, cfg.latent.spatial_compression),
                "temporal compression": (vae.temporal_compression,
                                         cfg.latent.temporal_compression),
                "text width": (text.embed_dim, cfg.model.text_embed_dim)}
    wrong = [f"{name} {got} (config: {want})" for name, (got, want) in expected.items()
             if got != want]
    if wrong:
        raise ConfigError(f"the encoders at {cfg.encoders.vae!r} / {cfg.encoders.text_encoder!r} "
                          f"do not fit the config: {'; '.join(wrong)}")


def _require_file(local: str, name: str, path: str, what: str) -> None:
    """A directory without `name` would make `from_pretrained` treat `path` as a Hub id."""
    if not os.path.isfile(os.path.join(local, name)):
        raise FileNotFoundError(f"no {name} under {path!r}: not a saved {what}")
