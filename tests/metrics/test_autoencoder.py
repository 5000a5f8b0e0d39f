"""The motion autoencoder and the interaction FID."""

from __future__ import annotations

import json

import pytest
import torch

from hoi.geometry.motion import NUM_ENTITIES
from hoi.metrics.autoencoder import MotionAEConfig, MotionAutoencoder, train_motion_autoencoder
from hoi.metrics.motion import interaction_fid

TINY = MotionAEConfig(hidden=32, latent=8, num_layers=2, kernel_size=3)


def motions(count: int, seed: int, frames: int = 9) -> torch.Tensor:
    """(count, frames, 340, 3) smooth random motions: a random start and a random velocity per
    clip (shared by all entities, as a rigidly carried object) plus a small per-entity shape."""
    g = torch.Generator().manual_seed(seed)
    shape = 0.1 * torch.randn(1, 1, NUM_ENTITIES, 3, generator=torch.Generator().manual_seed(99))
    start = torch.randn(count, 1, 1, 3, generator=g)
    velocity = 0.1 * torch.randn(count, 1, 1, 3, generator=g)
    t = torch.arange(frames, dtype=torch.float32)[None, :, None, None]
    return shape + start + velocity * t


@pytest.fixture(scope="module")
def trained() -> tuple[MotionAutoencoder, list[float]]:
    return train_motion_autoencoder(motions(64, 0), TINY, steps=150, batch_size=16, lr=3e-3)


def test_training_reduces_the_loss(trained) -> None:
    _, losses = trained
    assert len(losses) == 150
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_training_is_seeded_and_leaves_global_rng(trained) -> None:
    state = torch.random.get_rng_state()
    again, losses = train_motion_autoencoder(motions(64, 0), TINY, steps=150, batch_size=16,
                                             lr=3e-3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert losses == trained[1]


def test_features_shape_and_length_independence(trained) -> None:
    model, _ = trained
    with torch.no_grad():
        assert model.encode(motions(3, 1)).shape == (3, TINY.latent)
        assert model.encode(motions(3, 1, frames=17)).shape == (3, TINY.latent)


def test_save_load_round_trip(trained, tmp_path) -> None:
    model, _ = trained
    model.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["latent"] == TINY.latent
    loaded = MotionAutoencoder.from_pretrained(str(tmp_path))
    x = motions(4, 2)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.mean, model.mean)  # the normalisation travels with the weights


def test_fid_identical_about_zero_and_grows_with_shift(trained) -> None:
    model, _ = trained
    reference = motions(64, 3)
    same_distribution = motions(64, 4)
    assert interaction_fid(model, reference, reference, batch_size=20) == pytest.approx(
        0.0, abs=1e-6)
    base = interaction_fid(model, same_distribution, reference)
    shifted = interaction_fid(model, same_distribution + 0.5, reference)
    further = interaction_fid(model, same_distribution + 1.0, reference)
    assert base < shifted < further


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        MotionAEConfig(kernel_size=4)
