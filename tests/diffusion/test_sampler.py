"""Algorithm 2: determinism, every mode, classifier-free guidance, both samplers."""

from __future__ import annotations

import pytest
import torch

from hoi.config import load_config
from hoi.diffusion.sampler import Sampler
from hoi.model.svimo import SViMo
from tests.diffusion.tiny import build_parts, clip_batch

STEPS = 3


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(flavour="svimo-tiny")
    parts = build_parts(cfg, perturb=0.05)
    batch = clip_batch(parts, seeds=[3, 4])
    return parts, batch, Sampler(cfg, parts.svimo, parts.vid, parts.vae)


def _run(setup, seed=0, **kwargs):
    parts, batch, sampler = setup
    kwargs.setdefault("num_steps", STEPS)
    return sampler(batch.image_latent, batch.text, batch.K,
                   generator=torch.Generator().manual_seed(seed), **kwargs)


def test_joint_is_seeded(setup):
    a, b, c = _run(setup, 0), _run(setup, 0), _run(setup, 1)
    F, h, w = setup[0].cfg.latent_shape
    assert a.video_latent.shape == a.motion_latent.shape == (2, F, 16, h, w)
    assert a.motion.shape == (2, 9, 340, 3)
    for x, y in ((a.video_latent, b.video_latent), (a.motion_latent, b.motion_latent),
                 (a.motion, b.motion)):
        assert torch.equal(x, y)
    assert not torch.equal(a.video_latent, c.video_latent)
    assert not torch.equal(a.motion, c.motion)


def test_ddpm_and_ddim_differ_and_progress_is_reported(setup):
    calls = []
    ddpm = _run(setup, sampler="ddpm", progress=lambda i, n: calls.append((i, n)))
    ddim = _run(setup, sampler="ddim")
    assert calls == [(1, STEPS), (2, STEPS), (3, STEPS)]
    assert not torch.allclose(ddpm.video_latent, ddim.video_latent)


def test_motion_to_video_holds_the_given_motion(setup):
    parts, batch, _ = setup
    out = _run(setup, mode="motion_to_video", motion=batch.motion)
    assert torch.equal(out.motion, batch.motion)
    # its guidance is the given motion rendered and encoded, which differs from free sampling
    free = _run(setup)
    assert not torch.allclose(out.video_latent, free.video_latent)
    # a rendered motion video (its latent) alone also works; then VID recovers the 3D motion
    by_video = _run(setup, mode="motion_to_video", motion_latent=batch.motion_latent)
    assert torch.equal(by_video.motion_latent, batch.motion_latent)
    assert by_video.motion.shape == batch.motion.shape


def test_video_to_motion_holds_the_given_video(setup):
    parts, batch, _ = setup
    out = _run(setup, mode="video_to_motion", video_latent=batch.video_latent)
    assert torch.equal(out.video_latent, batch.video_latent)
    other = _run(setup, mode="video_to_motion", video_latent=batch.video_latent.flip(0))
    assert not torch.allclose(out.motion, other.motion)


def test_video_only_needs_the_motion_mask(setup):
    parts, batch, unmasked = setup
    with pytest.raises(ValueError, match="motion_attention_mask"):
        _run(setup, mode="video_only")
    # the same weights in a DiT built with the mask: video-only mode drops motion and VID
    cfg = load_config(flavour="svimo-tiny", overrides=["--model.motion_attention_mask", "true"])
    masked = SViMo(cfg)
    masked.load_state_dict(parts.svimo.state_dict())
    sampler = Sampler(cfg, masked.eval(), parts.vid, parts.vae)
    fast = sampler(batch.image_latent, batch.text, batch.K, mode="video_only",
                   generator=torch.Generator().manual_seed(0), num_steps=STEPS)
    assert fast.motion is None and fast.motion_latent is None
    assert fast.video_latent.shape == batch.video_latent.shape
    # with the mask, the video the joint loop makes is the video-only one (same noise draws
    # for z^V come first from the generator in both modes)
    joint = sampler(batch.image_latent, batch.text, batch.K, mode="joint", sampler="ddim",
                    generator=torch.Generator().manual_seed(0), num_steps=STEPS)
    torch.testing.assert_close(joint.video_latent, fast.video_latent, rtol=1e-4, atol=1e-5)


def test_classifier_free_guidance(setup):
    parts = setup[0]
    with pytest.raises(ValueError, match="null_text"):
        _run(setup, guidance_scale=3.0)
    guided = _run(setup, guidance_scale=3.0, null_text=parts.null_text)
    plain = _run(setup, guidance_scale=1.0)
    assert torch.isfinite(guided.video_latent).all()
    assert not torch.allclose(guided.video_latent, plain.video_latent)


def test_bad_mode_arguments(setup):
    with pytest.raises(ValueError, match="unknown mode"):
        _run(setup, mode="dance")
    with pytest.raises(ValueError, match="needs a video_latent"):
        _run(setup, mode="video_to_motion")
    with pytest.raises(ValueError, match="needs a motion"):
        _run(setup, mode="motion_to_video")


def _variant(variant: str):
    cfg = load_config(flavour="svimo-tiny", overrides=["--loop.variant", variant])
    parts = build_parts(cfg, perturb=0.05)
    inputs = []
    parts.svimo.register_forward_pre_hook(lambda module, args: inputs.append(args))
    return Sampler(cfg, parts.svimo, parts.vid, parts.vae), inputs


def test_each_variant_samples_as_it_was_trained(setup):
    _, batch, _ = setup
    run = lambda sampler, **kw: sampler(  # noqa: E731
        batch.image_latent, batch.text, batch.K, generator=torch.Generator().manual_seed(0),
        num_steps=STEPS, **kw)
    # trained with zeros in the guidance slot: sampled with zeros there too
    for variant in ("no_vid", "gradient_only"):
        sampler, inputs = _variant(variant)
        run(sampler)
        assert len(inputs) == STEPS and all(args[5].abs().max() == 0 for args in inputs)
    # the motion model's video stream stays the initial noise; it only samples jointly
    sampler, inputs = _variant("motion_model")
    out = run(sampler)
    assert all(torch.equal(args[0], inputs[0][0]) for args in inputs)
    assert torch.equal(out.video_latent, inputs[0][0]) and out.motion is not None
    with pytest.raises(ValueError, match="loop.variant 'motion_model'"):
        run(sampler, mode="motion_to_video", motion_latent=batch.motion_latent)
    # the video model samples only from a given motion, which fills the guidance slot
    sampler, inputs = _variant("video_model")
    with pytest.raises(ValueError, match=r"\['motion_to_video'\]"):
        run(sampler)
    out = run(sampler, mode="motion_to_video", motion_latent=batch.motion_latent)
    assert all(torch.equal(args[5], batch.motion_latent) for args in inputs)
    assert torch.equal(out.motion_latent, batch.motion_latent)


def test_bf16_networks_sample_a_float32_motion():
    """The 3D motion is stepped in float32 while the networks compute in bf16."""
    cfg = load_config(flavour="svimo-tiny")
    parts = build_parts(cfg, perturb=0.05)
    batch = clip_batch(parts, seeds=[3])
    bf16 = torch.bfloat16
    for module in (parts.svimo, parts.vid):
        module.to(bf16)
    parts.vae.to(dtype=bf16)
    sampler = Sampler(cfg, parts.svimo, parts.vid, parts.vae)
    out = sampler(batch.image_latent.to(bf16), batch.text.to(bf16), batch.K,
                  generator=torch.Generator().manual_seed(0), num_steps=STEPS)
    assert out.video_latent.dtype == bf16 and out.motion.dtype == torch.float32
    given = sampler(batch.image_latent.to(bf16), batch.text.to(bf16), batch.K,
                    generator=torch.Generator().manual_seed(0), num_steps=STEPS,
                    mode="motion_to_video", motion=batch.motion)
    assert torch.equal(given.motion, batch.motion)  # held exactly, not rounded to bf16
