"""A small motion autoencoder whose clip features define the interaction FID.

The paper computes its HOI FID with features of a VAE (Diverse Sampling's residual graph
convolutions) trained on TACO's motions. We train our own, much smaller, on the data's motions:
a temporal 1D-convolution encoder over the flattened 340 x 3 frame, mean-pooled over time
into one clip vector (the FID feature), and a decoder that rebuilds every frame from that
vector and the frame's normalised time. One vector per clip forces the features to describe the
whole interaction (hand and object trajectories together), and the time pooling makes the
model independent of the clip length.

Inputs are motions (B, N, 340, 3) in the units of the data they were trained on (the
diffusion units of `hoi.geometry.motion.normalize` are O(1) and a good choice); the model
standardises each coordinate with statistics stored at training time. A trained model is an
inference artefact: `save_pretrained` writes `model.safetensors` and `config.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from hoi.config import StorageConfig
from hoi.geometry.motion import NUM_ENTITIES
from hoi.storage import join, read_bytes, read_text, write_bytes, write_text

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class MotionAEConfig:
    """Sizes of the motion autoencoder."""

    num_entities: int = NUM_ENTITIES
    """Joints + points per frame (340)."""
    hidden: int = 256
    """Channels of the temporal convolutions."""
    latent: int = 64
    """Size of the clip feature (the FID's dimension)."""
    num_layers: int = 3
    """Convolutions in the encoder and in the decoder."""
    kernel_size: int = 5
    """Temporal kernel (odd), in frames."""

    def __post_init__(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if min(self.hidden, self.latent, self.num_layers, self.num_entities) < 1:
            raise ValueError(f"sizes must be positive: {self}")


def _conv_stack(channels_in: int, hidden: int, channels_out: int, num_layers: int,
                kernel_size: int) -> nn.Sequential:
    """num_layers temporal convolutions (GELU between), 'same' padding."""
    layers: list[nn.Module] = []
    sizes = [channels_in] + [hidden] * (num_layers - 1) + [channels_out]
    for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2))
        if i < num_layers - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _time_features(num_frames: int, device: torch.device) -> torch.Tensor:
    """(4, N) sin/cos of the normalised frame time at two frequencies."""
    t = torch.linspace(0, 1, num_frames, device=device)
    return torch.stack([torch.sin(math.pi * t), torch.cos(math.pi * t),
                        torch.sin(2 * math.pi * t), torch.cos(2 * math.pi * t)])


class MotionAutoencoder(nn.Module):
    """Clip motion (B, N, 340, 3) <-> clip feature (B, latent)."""

    def __init__(self, config: MotionAEConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.num_entities * 3
        self.encoder = _conv_stack(channels, config.hidden, config.latent, config.num_layers,
                                   config.kernel_size)
        self.decoder = _conv_stack(config.latent + 4, config.hidden, channels,
                                   config.num_layers, config.kernel_size)
        # Per-coordinate standardisation, set from the training motions (`fit_normalisation`).
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def fit_normalisation(self, motions: torch.Tensor) -> None:
        """Set mean/std of each of the 340 x 3 coordinates from motions (M, N, 340, 3)."""
        flat = motions.flatten(2).flatten(0, 1).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-6))

    def _standardise(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, N, 340, 3) -> (B, 1020, N) standardised channels-first."""
        x = (motion.flatten(2).float() - self.mean) / self.std
        return x.transpose(1, 2)

    def encode(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, N, 340, 3) -> (B, latent) clip features (time-averaged encoder output)."""
        return self.encoder(self._standardise(motion)).mean(dim=-1)

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, latent) -> standardised reconstruction (B, 1020, N)."""
        time = _time_features(num_frames, z.device).expand(z.shape[0], -1, -1)
        return self.decoder(torch.cat([z[..., None].expand(-1, -1, num_frames), time], dim=1))

    def loss(self, motion: torch.Tensor) -> torch.Tensor:
        """Reconstruction MSE in standardised units of a batch (B, N, 340, 3)."""
        target = self._standardise(motion)
        return F.mse_loss(self.decode(self.encode(motion), motion.shape[1]), target)

    def save_pretrained(self, path: str, storage: StorageConfig | None = None) -> None:
        """Write `model.safetensors` (weights and normalisation), then `config.json`, to
        `path` (local or s3://)."""
        storage = storage or StorageConfig()
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        write_bytes(join(path, WEIGHTS_NAME), safetensors.torch.save(state), storage)
        write_text(join(path, CONFIG_NAME), json.dumps(asdict(self.config), indent=2), storage)

    @classmethod
    def from_pretrained(cls, path: str, storage: StorageConfig | None = None,
                        device: str | torch.device = "cpu") -> MotionAutoencoder:
        """Load a model written by `save_pretrained` (local or s3://), in eval mode."""
        storage = storage or StorageConfig()
        model = cls(MotionAEConfig(**json.loads(read_text(join(path, CONFIG_NAME), storage))))
        model.load_state_dict(safetensors.torch.load(read_bytes(join(path, WEIGHTS_NAME),
                                                                storage)))
        return model.to(device).eval()


def train_motion_autoencoder(motions: torch.Tensor, config: MotionAEConfig | None = None,
                             steps: int = 2000, batch_size: int = 32, lr: float = 1e-3,
                             seed: int = 0) -> tuple[MotionAutoencoder, list[float]]:
    """Train the autoencoder on motions (M, N, 340, 3) with Adam on random minibatches.

    Initialisation and batches come from `seed` alone (the global RNG is left as it was).
    Returns the model in eval mode and the loss of every step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MotionAutoencoder(config or MotionAEConfig()).to(motions.device)
    model.fit_normalisation(motions)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        index = torch.randint(len(motions), (min(batch_size, len(motions)),),
                              generator=generator)
        loss = model.loss(motions[index.to(motions.device)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses


__all__ = ["MotionAEConfig", "MotionAutoencoder", "train_motion_autoencoder"]
