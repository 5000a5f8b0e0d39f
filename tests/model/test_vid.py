"""VID, the vision-aware 3D interaction diffusion network (hoi/model/vid.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from hoi.config import Config, load_config
from hoi.geometry.motion import NUM_ENTITIES
from hoi.model.vid import (
    VID,
    latent_frame_positions,
    sinusoidal_embedding,
    spatial_embedding,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and far faster when other processes share the two
    cores (OpenMP workers spin-wait for a busy core: 100 overfit steps took 3 s on one thread,
    60 s on two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> Config:
    return load_config(flavour="svimo-tiny")


def make_model(cfg: Config, seed: int = 0) -> VID:
    torch.manual_seed(seed)
    return VID(cfg)


def make_inputs(cfg: Config, batch: int = 2, frames: int | None = None,
                latent_shape: tuple[int, int, int] | None = None, seed: int = 0,
                device: str | None = None) -> tuple[torch.Tensor, ...]:
    """(motion_t, video_latent, motion_latent, t, text) for `cfg`'s clip size unless
    overridden."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.data.num_frames if frames is None else frames
    f, h, w = cfg.latent_shape if latent_shape is None else latent_shape
    c = cfg.latent.channels
    motion = torch.randn(batch, n, NUM_ENTITIES, 3, generator=g)
    video_latent = torch.randn(batch, f, c, h, w, generator=g)
    motion_latent = torch.randn(batch, f, c, h, w, generator=g)
    t = torch.randint(0, cfg.diffusion.num_train_timesteps, (batch,), generator=g)
    text = torch.randn(batch, cfg.model.max_text_tokens, cfg.model.text_embed_dim, generator=g)
    return tuple(x.to(device) if device else x
                 for x in (motion, video_latent, motion_latent, t, text))


# ---------------------------------------------------------------------------------------------
# Positional encodings
# ---------------------------------------------------------------------------------------------


def test_sinusoidal_embedding_matches_hand_computation() -> None:
    # dim 4: frequencies 1 and 10000 ** (-1 / 2) = 0.01; cosines then sines
    p = torch.tensor([0.0, 3.0])
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                             [math.cos(3), math.cos(0.03), math.sin(3), math.sin(0.03)]])
    torch.testing.assert_close(sinusoidal_embedding(p, 4), expected)
    # odd widths are padded with one zero channel
    odd = sinusoidal_embedding(p, 5)
    assert odd.shape == (2, 5) and torch.all(odd[:, -1] == 0)


def test_latent_frames_share_the_time_code_of_their_video_frame() -> None:
    positions = latent_frame_positions(3, 4)
    torch.testing.assert_close(positions, torch.tensor([0.0, 4.0, 8.0]))
    video_frames = sinusoidal_embedding(torch.arange(9.0), 64)
    torch.testing.assert_close(sinusoidal_embedding(positions, 64), video_frames[::4])


def test_spatial_embedding_is_in_normalised_coordinates() -> None:
    dim = 32
    one = spatial_embedding(1, 1, dim)  # centre (0.5, 0.5)
    three = spatial_embedding(3, 3, dim).view(3, 3, dim)
    torch.testing.assert_close(three[1, 1], one[0])  # same place at another scale, same code
    # first half encodes the row only, second half the column only
    grid = spatial_embedding(4, 6, dim).view(4, 6, dim)
    torch.testing.assert_close(grid[:, :1, : dim // 2].expand(4, 6, -1), grid[..., : dim // 2])
    torch.testing.assert_close(grid[:1, :, dim // 2:].expand(4, 6, -1), grid[..., dim // 2:])
    assert not torch.allclose(grid[0, 0], grid[3, 5])


# ---------------------------------------------------------------------------------------------
# Shapes and sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["svimo-tiny", "svimo-small"])
def test_output_has_the_motion_shape(flavour: str) -> None:
    cfg = load_config(flavour=flavour)
    model = make_model(cfg)
    inputs = make_inputs(cfg)
    out = model(*inputs)
    assert out.shape == (2, cfg.data.num_frames, NUM_ENTITIES, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("frames", "latent_shape"), [(9, (3, 4, 6)), (5, (2, 2, 2)), (1, (1, 3, 5))])
def test_frame_counts_and_latent_sizes_are_free(tiny: Config, frames: int,
                                                latent_shape: tuple[int, int, int]) -> None:
    model = make_model(tiny).eval()
    inputs = make_inputs(tiny, frames=frames, latent_shape=latent_shape)
    assert model(*inputs).shape == (2, frames, NUM_ENTITIES, 3)
    f, h, w = latent_shape
    memory = model.encode_latents(inputs[1], inputs[2])
    # scale 0 at full size, scale 1 halved (rounded up)
    assert memory.shape == (2, f * (h * w + math.ceil(h / 2) * math.ceil(w / 2)), 64)


def test_batch_entries_are_independent(tiny: Config) -> None:
    model = make_model(tiny).eval()
    inputs = make_inputs(tiny, batch=3)
    together = model(*inputs)
    alone = model(*(x[1:2] for x in inputs))
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


def test_rejects_mismatched_inputs(tiny: Config) -> None:
    model = make_model(tiny)
    motion, video, motion_latent, t, text = make_inputs(tiny)
    with pytest.raises(ValueError, match="340"):
        model(motion[:, :, :100], video, motion_latent, t, text)
    with pytest.raises(ValueError, match="same shape"):
        model(motion, video, motion_latent[:, :2], t, text)
    with pytest.raises(ValueError, match="16"):
        model(motion, video[:, :, :8], motion_latent[:, :, :8], t, text)
    with pytest.raises(ValueError, match="batch"):
        model(motion, video, motion_latent, t[:1], text)
    with pytest.raises(ValueError, match="text 1"):
        model(motion, video, motion_latent, t, text[:1])


def _layer_params(d: int) -> int:
    attention = (d * d + d) + (2 * d * d + 2 * d) + (d * d + d)  # q, kv, out
    feed_forward = (d * 4 * d + 4 * d) + (4 * d * d + d)
    modulation = d * 9 * d + 9 * d
    return 2 * attention + feed_forward + modulation


def _encoder_params(c_in: int, channels: tuple[int, ...]) -> int:
    total = 0
    for a, b in zip((c_in, *channels), channels, strict=False):
        total += (a * b * 27 + b) + (b * b * 27 + b) + 2 * (2 * b)  # 2 convs, 2 GroupNorms
    return total


def test_5b_builds_and_runs_on_the_meta_device() -> None:
    cfg = load_config(flavour="svimo-5b")
    with torch.device("meta"):
        model = VID(cfg)
    d = cfg.vid.hidden_size
    assert sum(p.numel() for p in model.layers.parameters()) == cfg.vid.num_layers * _layer_params(d)
    assert sum(p.numel() for p in model.video_encoder.parameters()) == _encoder_params(
        16, cfg.vid.encoder_channels)
    assert 80e6 < sum(p.numel() for p in model.parameters()) < 90e6
    with torch.device("meta"):
        inputs = make_inputs(cfg, batch=2, device="meta")
        out = model(*inputs)
        memory = model.encode_latents(inputs[1], inputs[2])
    assert out.shape == (2, 49, NUM_ENTITIES, 3) and out.device.type == "meta"
    # 13 latent frames x (52 x 78 + 26 x 39 + 13 x 20) cells
    assert memory.shape == (2, 13 * (52 * 78 + 26 * 39 + 13 * 20), d)


def test_same_seed_same_weights(tiny: Config) -> None:
    a, b, c = make_model(tiny, 0).state_dict(), make_model(tiny, 0).state_dict(), \
        make_model(tiny, 1).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["motion_embed.0.weight"], c["motion_embed.0.weight"])


# ---------------------------------------------------------------------------------------------
# What the output depends on, and gradients
# ---------------------------------------------------------------------------------------------


def test_output_depends_on_every_input(tiny: Config) -> None:
    model = make_model(tiny).eval()
    motion, video, motion_latent, t, text = make_inputs(tiny)
    other = make_inputs(tiny, seed=1)
    with torch.no_grad():
        base = model(motion, video, motion_latent, t, text)
        changed = {
            "motion_t": model(other[0], video, motion_latent, t, text),
            "video_latent": model(motion, other[1], motion_latent, t, text),
            "motion_latent": model(motion, video, other[2], t, text),
            "t": model(motion, video, motion_latent, (t + 500) % 1000, text),
            "text": model(motion, video, motion_latent, t, other[4]),
        }
    for name, out in changed.items():
        relative = (out - base).norm() / base.norm()
        assert relative > 1e-3, f"output ignores {name} (relative change {relative:.2e})"


def test_x0_loss_reaches_every_parameter(tiny: Config) -> None:
    model = make_model(tiny)
    inputs = make_inputs(tiny)
    target = torch.randn_like(inputs[0])
    torch.mean((model(*inputs) - target) ** 2).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []
    for part in ("video_encoder", "motion_encoder", "fusion", "text_embed", "layers", "head"):
        assert any(n.startswith(part) for n, _ in model.named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients(tiny: Config) -> None:
    inputs = make_inputs(tiny)
    grads = []
    for enabled in (False, True):
        model = make_model(tiny)
        model.gradient_checkpointing = enabled
        assert model.video_encoder.gradient_checkpointing is enabled
        model(*inputs).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# It learns
# ---------------------------------------------------------------------------------------------


def test_overfits_a_fixed_noised_batch(tiny: Config) -> None:
    model = make_model(tiny)
    motion, video, motion_latent, _, text = make_inputs(tiny)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(motion.shape, generator=g)
    t = torch.tensor([500, 900])  # mostly noise: x0 must come from the conditions and positions
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)[t].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * torch.randn(x0.shape, generator=g)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        loss = torch.mean((model(x_t, video, motion_latent, t, text) - x0) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.5  # near E[x0^2] = 1: the head starts small
    assert losses[-1] < losses[0] / 100


def test_tells_clips_apart_by_their_prompt_alone(tiny: Config) -> None:
    """Two clips with the same latents and pure-noise motion input but different prompts and
    different clean motions: only the text path can tell them apart."""
    model = make_model(tiny)
    motion, video, motion_latent, _, text = make_inputs(tiny)
    same = lambda x: x[:1].expand_as(x)  # noqa: E731
    video, motion_latent, x_t = same(video), same(motion_latent), same(motion)
    x0 = torch.randn(motion.shape, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([999, 999])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(150):
        loss = torch.mean((model(x_t, video, motion_latent, t, text) - x0) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = model(x_t, video, motion_latent, t, text)
    # each clip's output is near its own motion, not the pair's mean (error 0.5 per coordinate)
    assert torch.mean((out - x0) ** 2) < 0.1
    swapped = model(x_t, video, motion_latent, t, text.flip(0)).detach()
    assert torch.mean((swapped - x0.flip(0)) ** 2) < 0.1
