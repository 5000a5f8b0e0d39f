"""Algorithm 1: loss terms, gradient pathways, variants, warm-up, and an overfit check."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hoi.config import load_config
from hoi.diffusion.closed_loop import ClosedLoop
from hoi.diffusion.conditions import drop_conditions, image_condition
from tests.diffusion.tiny import build_parts, clip_batch


def _loop(variant: str, **overrides):
    args = ["--loop.variant", variant]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    cfg = load_config(flavour="svimo-tiny", overrides=args)
    parts = build_parts(cfg, perturb=0.05)
    return ClosedLoop(cfg, parts.svimo, parts.vid, parts.vae, parts.null_text), parts


@pytest.fixture(scope="module")
def batch():
    cfg = load_config(flavour="svimo-tiny")
    return clip_batch(build_parts(cfg), seeds=[1, 2])


def _grads(loss, module):
    grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True,
                                allow_unused=True)
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


def test_batch_shapes(batch):
    cfg = load_config(flavour="svimo-tiny")
    F, h, w = cfg.latent_shape
    assert batch.video_latent.shape == batch.motion_latent.shape == (2, F, 16, h, w)
    assert batch.image_latent.shape == (2, 1, 16, h, w)
    assert batch.text.shape == (2, 8, 32) and batch.motion.shape == (2, 9, 340, 3)
    # normalised camera-frame coordinates are O(1), not metres around z = 0.5
    assert batch.motion.abs().mean() < 3 and batch.motion[..., 2].mean().abs() < 2


def test_full_loop_gradient_pathways(batch):
    loop, parts = _loop("full")
    terms = loop.losses(batch, torch.Generator().manual_seed(0))
    assert {"svimo", "svimo_video", "svimo_motion", "vid", "vid_hand", "vid_object",
            "total"} <= set(terms)
    # VID's loss reaches SViMo through the gradient constraint...
    assert _grads(terms["vid"], parts.svimo) > 0
    # ... and SViMo's loss never reaches VID: the guidance pass runs without gradient
    assert _grads(terms["svimo"], parts.vid) == 0
    expected = terms["svimo"] + 0.05 * terms["vid"]
    torch.testing.assert_close(terms["total"], expected)


def test_guidance_only_keeps_vid_loss_out_of_svimo(batch):
    loop, parts = _loop("guidance_only")
    terms = loop.losses(batch, torch.Generator().manual_seed(0))
    assert _grads(terms["vid"], parts.svimo) == 0
    assert _grads(terms["svimo"], parts.vid) == 0
    assert _grads(terms["vid"], parts.vid) > 0


def test_gradient_only_and_no_vid(batch):
    loop, parts = _loop("gradient_only")
    terms = loop.losses(batch, torch.Generator().manual_seed(0))
    assert _grads(terms["vid"], parts.svimo) > 0
    loop, parts = _loop("no_vid")
    terms = loop.losses(batch, torch.Generator().manual_seed(0))
    assert "vid" not in terms and _grads(terms["total"], parts.vid) == 0
    torch.testing.assert_close(terms["total"], terms["svimo"])


def test_guidance_changes_svimo_prediction(batch):
    """The guidance slot is live: full and gradient_only (zeros in the slot) differ in
    SViMo's loss for the same draws."""
    full, _ = _loop("full")
    empty, _ = _loop("gradient_only")
    a = full.losses(batch, torch.Generator().manual_seed(5))["svimo"]
    b = empty.losses(batch, torch.Generator().manual_seed(5))["svimo"]
    assert not torch.allclose(a, b)


def test_warmup_trains_vid_alone(batch):
    loop, parts = _loop("full", **{"loop.vid_warmup_steps": 10})
    assert loop.phase(9) == "warmup" and loop.phase(10) == "joint"
    terms = loop.losses(batch, torch.Generator().manual_seed(0), phase="warmup")
    assert set(terms) >= {"vid", "total"} and "svimo" not in terms
    assert _grads(terms["total"], parts.svimo) == 0 and _grads(terms["total"], parts.vid) > 0


def test_svimo_warmup_trains_the_video_stream_on_the_true_motion_latent(batch):
    loop, parts = _loop("full", **{"loop.vid_warmup_steps": 10, "loop.svimo_warmup": True})
    guidance = []
    parts.svimo.register_forward_pre_hook(lambda module, args: guidance.append(args[5]))
    terms = loop.losses(batch, torch.Generator().manual_seed(0), phase="warmup")
    assert torch.equal(guidance[-1], batch.motion_latent)  # the video model's guidance
    assert "svimo" not in terms  # the motion stream's loss is not trained, nor reported
    torch.testing.assert_close(terms["total"], terms["vid"] + terms["svimo_video"])
    # the video stream learns; the motion head and VID's loss stay out of SViMo
    assert _grads(terms["total"], parts.svimo.head) > 0
    assert _grads(terms["total"], parts.svimo.motion_head) == 0
    assert _grads(terms["vid"], parts.svimo) == 0 and _grads(terms["vid"], parts.vid) > 0


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_warmup_feeds_vid_the_clean_latents_of_its_share_of_clips(batch, share):
    loop, parts = _loop("full", **{"loop.vid_warmup_clean": share})
    seen = []
    parts.vid.register_forward_pre_hook(lambda module, args: seen.append(args[1:3]))
    four = batch.select(torch.tensor([0, 1, 0, 1]))
    clean = []
    for seed in range(8):
        loop.losses(four, torch.Generator().manual_seed(seed), phase="warmup")
        video, motion = seen[-1]
        same_v = (video == four.video_latent).flatten(1).all(1)
        same_m = (motion == four.motion_latent).flatten(1).all(1)
        assert torch.equal(same_v, same_m)  # both streams of a clip, or neither
        clean += same_v.tolist()
    assert sum(clean) / len(clean) == pytest.approx(share, abs=0.2)


def test_condition_dropout():
    text, image = torch.ones(64, 8, 32), torch.ones(64, 1, 16, 4, 6)
    null = torch.full((1, 8, 32), -1.0)
    t, i = drop_conditions(text, image, null, 0.5, torch.Generator().manual_seed(0))
    dropped = (t[:, 0, 0] == -1)
    assert 10 < int(dropped.sum()) < 54                       # about half
    assert torch.equal(dropped, i.flatten(1).amax(1) == 0)    # text and image drop together
    t, i = drop_conditions(text, image, null, 0.0)
    assert torch.equal(t, text) and torch.equal(i, image)


def test_image_condition_modes():
    z = torch.randn(2, 1, 16, 4, 6)
    rep = image_condition(z, 3, "repeat")
    assert rep.shape == (2, 3, 16, 4, 6) and torch.equal(rep[:, 2], z[:, 0])
    first = image_condition(z, 3, "first_frame")
    assert torch.equal(first[:, 0], z[:, 0]) and first[:, 1:].abs().max() == 0


@pytest.mark.slow
def test_overfits_one_clip():
    """150 closed-loop steps on one clip drive both losses down, measured on the same fixed
    draws of (t, noise) before and after."""
    cfg = load_config(flavour="svimo-tiny", overrides=["--diffusion.condition_dropout", "0.0"])
    parts = build_parts(cfg)
    batch = clip_batch(parts, seeds=[7])
    loop = ClosedLoop(cfg, parts.svimo, parts.vid, parts.vae, parts.null_text)

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            draws = [loop.losses(batch, torch.Generator().manual_seed(100 + i)) for i in range(8)]
        return {k: sum(d[k].item() for d in draws) / len(draws) for k in ("svimo", "vid")}

    before = evaluate()
    params = [*parts.svimo.parameters(), *parts.vid.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        opt.zero_grad()
        loop.losses(batch, g)["total"].backward()
        opt.step()
    after = evaluate()
    # measured: svimo 0.47 -> 0.24, vid 2.5 -> 0.08
    assert after["svimo"] < 0.65 * before["svimo"], (before, after)
    assert after["vid"] < 0.2 * before["vid"], (before, after)


def test_separate_models_learn_one_stream_each(batch):
    """"VModel w/ Pred. Mot.": the video model learns the video with the true motion latent
    in the guidance slot; the motion model learns the motion without seeing the video."""
    loop, parts = _loop("video_model")
    slots = []
    parts.svimo.register_forward_pre_hook(lambda module, args: slots.append(args[5]))
    terms = loop.losses(batch, torch.Generator().manual_seed(0))
    assert torch.equal(slots[-1], batch.motion_latent)
    assert "vid" not in terms and _grads(terms["total"], parts.vid) == 0
    torch.testing.assert_close(terms["total"], terms["svimo_video"])

    loop, parts = _loop("motion_model")
    a = loop.losses(batch, torch.Generator().manual_seed(0))
    blank = dataclasses.replace(batch, video_latent=torch.zeros_like(batch.video_latent))
    b = loop.losses(blank, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a["total"], a["svimo_motion"])
    torch.testing.assert_close(a["svimo_motion"], b["svimo_motion"])  # the video is not read
    assert not torch.allclose(a["svimo_video"], b["svimo_video"])
    assert "vid" not in a and _grads(a["total"], parts.vid) == 0


def test_a_bf16_step_keeps_the_motion_its_targets_and_losses_in_float32(batch, monkeypatch):
    """The networks in bf16, as on GPUs (TrainSystem casts the batch with `TrainBatch.to`):
    the 3D motion, its noise, VID's estimate handed to the loss and the loss terms stay
    float32 (in bf16 the normalised motion's spacing is about a millimetre, the size of its
    velocity and acceleration terms)."""
    import hoi.diffusion.closed_loop as closed_loop

    cfg = load_config(flavour="svimo-tiny")
    parts = build_parts(cfg, perturb=0.05)
    bf16 = torch.bfloat16
    parts.svimo.to(bf16)
    parts.vid.to(bf16)
    parts.vae.to(dtype=bf16)
    loop = ClosedLoop(cfg, parts.svimo, parts.vid, parts.vae, parts.null_text)
    seen = []
    vid_loss = closed_loop.vid_loss
    monkeypatch.setattr(closed_loop, "vid_loss", lambda pred, target: seen.append(
        (pred.dtype, target.dtype)) or vid_loss(pred, target))
    moved = batch.to(dtype=bf16)
    assert moved.video_latent.dtype == moved.text.dtype == bf16
    assert moved.motion.dtype == moved.K.dtype == torch.float32
    assert torch.equal(moved.motion, batch.motion)  # not rounded on the way
    for phase in ("warmup", "joint"):
        terms = loop.losses(moved, torch.Generator().manual_seed(0), phase)
        assert terms["vid"].dtype == torch.float32 and torch.isfinite(terms["total"])
    assert seen == [(torch.float32, torch.float32)] * 2
