"""The synchronized video-motion DiT: shapes, modality coupling, the motion mask, sizes."""

from __future__ import annotations

import pytest
import torch

from hoi.config import load_config
from hoi.model.svimo import SViMo


def _randomised(cfg) -> SViMo:
    """A model whose zero-initialised gates and heads are not zero (so streams interact)."""
    torch.manual_seed(0)
    model = SViMo(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _inputs(cfg, batch=2, seed=0):
    F, h, w = cfg.latent_shape
    g = torch.Generator().manual_seed(seed)
    lat = [torch.randn(batch, F, cfg.latent.channels, h, w, generator=g) for _ in range(4)]
    text = torch.randn(batch, cfg.model.max_text_tokens, cfg.model.text_embed_dim, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return lat, text, t


@pytest.mark.parametrize("flavour", ["svimo-tiny", "svimo-small"])
def test_shapes(flavour):
    cfg = load_config(flavour=flavour)
    model = SViMo(cfg)
    (video, image, motion, guidance), text, t = _inputs(cfg)
    v, m = model(video, image, text, t, motion, guidance)
    assert v.shape == video.shape and m.shape == motion.shape
    v_only, none = model(video, image, text, t)
    assert v_only.shape == video.shape and none is None


def test_zero_init_starts_as_zero_prediction():
    """adaLN-zero: every block is the identity and both heads output zero at initialisation."""
    cfg = load_config(flavour="svimo-tiny")
    (video, image, motion, guidance), text, t = _inputs(cfg)
    v, m = SViMo(cfg)(video, image, text, t, motion, guidance)
    assert v.abs().max() == 0 and m.abs().max() == 0


def test_streams_are_coupled_through_joint_attention():
    cfg = load_config(flavour="svimo-tiny")
    model = _randomised(cfg)
    (video, image, motion, guidance), text, t = _inputs(cfg)
    with torch.no_grad():
        v1, m1 = model(video, image, text, t, motion, guidance)
        v2, m2 = model(video, image, text, t, motion + 1.0, guidance)   # motion only changes
        v3, _ = model(video, image, text + 1.0, t, motion, guidance)    # text only changes
        v4, m4 = model(video, image, text, t, motion, guidance + 1.0)   # guidance only changes
    assert not torch.allclose(v1, v2) and not torch.allclose(m1, m2)
    assert not torch.allclose(v1, v3)
    assert not torch.allclose(m1, m4) and not torch.allclose(v1, v4)


def test_motion_mask_makes_video_independent_of_motion():
    """With CoInteract's asymmetric mask the video prediction is the same with the motion
    stream, with another motion, and without it (fast video-only mode is exact); motion
    still sees the video."""
    cfg = load_config(flavour="svimo-tiny", overrides=["--model.motion_attention_mask", "true"])
    model = _randomised(cfg)
    (video, image, motion, guidance), text, t = _inputs(cfg)
    with torch.no_grad():
        v_joint, m_joint = model(video, image, text, t, motion, guidance)
        v_other, _ = model(video, image, text, t, motion * 3, guidance - 1)
        v_only, _ = model(video, image, text, t)
        _, m_moved = model(video + 1.0, image, text, t, motion, guidance)
    torch.testing.assert_close(v_joint, v_only, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v_other, v_only, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(m_joint, m_moved)


def test_batch_items_are_independent():
    cfg = load_config(flavour="svimo-tiny")
    model = _randomised(cfg)
    (video, image, motion, guidance), text, t = _inputs(cfg, batch=3)
    with torch.no_grad():
        v, m = model(video, image, text, t, motion, guidance)
        v1, m1 = model(video[1:2], image[1:2], text[1:2], t[1:2], motion[1:2], guidance[1:2])
    torch.testing.assert_close(v[1:2], v1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m[1:2], m1, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = load_config(flavour="svimo-tiny")
    (video, image, motion, guidance), text, t = _inputs(cfg)
    grads = []
    for blocks in (False, [1], True):
        model = _randomised(cfg).train()
        model.set_gradient_checkpointing(blocks)
        v, m = model(video, image, text, t, motion, guidance)
        (v.square().mean() + m.square().mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert [b.gradient_checkpointing for b in model.transformer_blocks] == [True, True]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-5, atol=1e-6)


def test_math_backend_matches_sdpa():
    cfg = load_config(flavour="svimo-tiny", overrides=["--model.motion_attention_mask", "true"])
    math_cfg = load_config(flavour="svimo-tiny", overrides=[
        "--model.motion_attention_mask", "true", "--model.attention_backend", "math"])
    a, b = _randomised(cfg), _randomised(math_cfg)
    b.load_state_dict(a.state_dict())
    (video, image, motion, guidance), text, t = _inputs(cfg)
    with torch.no_grad():
        for x, y in zip(a(video, image, text, t, motion, guidance),
                        b(video, image, text, t, motion, guidance), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_svimo_5b_on_meta_device_matches_the_paper():
    """SPEC section 2: 6.02 B parameters, 26,590 tokens, 42 blocks of 48 x 64."""
    cfg = load_config(flavour="svimo-5b")
    with torch.device("meta"):
        model = SViMo(cfg)
    params = sum(p.numel() for p in model.parameters())
    table = model.pos_embedding.numel()          # learned positional table (a buffer)
    assert abs(params - 6.02e9) / 6.02e9 < 0.01, params
    assert abs(params + table - 6.02e9) / 6.02e9 < 0.01
    assert cfg.sequence_length == 26_590 and cfg.tokens_per_stream == 13_182
    assert model.config.model.hidden_size == 3072 and len(model.transformer_blocks) == 42
    motion = sum(p.numel() for n, p in model.named_parameters() if "motion" in n)
    assert abs(motion - (42 * 2 * (512 * 9216 + 9216) + 3.74e6)) < 0.05e6  # SPEC's breakdown
    F, h, w = cfg.latent_shape
    with torch.device("meta"):
        video = torch.empty(1, F, 16, h, w)
        out, m = model(video, video, torch.empty(1, 226, 4096), torch.zeros(1, dtype=torch.long),
                       video, video)
    assert out.shape == (1, 13, 16, 52, 78) and m.shape == out.shape


def test_only_even_layers_give_the_motion_stream_its_own_modulation():
    """The paper's "Only Even Layers" (table 4): blocks 0, 2, ... keep motion_linear; in the
    others the motion tokens are modulated (shift, scale, gate) as the video tokens."""
    cfg = load_config(flavour="svimo-tiny", overrides=["--model.motion_modulation", "even",
                                                       "--model.num_layers", "4"])
    model = _randomised(cfg)
    assert [b.norm1.motion_linear is not None and b.norm2.motion_linear is not None
            for b in model.transformer_blocks] == [True, False, True, False]
    g = torch.Generator().manual_seed(1)
    D, T = cfg.model.hidden_size, cfg.model.time_embed_dim
    text, x = torch.randn(2, 3, D, generator=g), torch.randn(2, 5, D, generator=g)
    temb = torch.randn(2, T, generator=g)
    for index, own in ((0, True), (1, False)):
        normed, gates = model.transformer_blocks[index].norm1([text, x, x.clone()], temb)
        same = torch.equal(normed[2], normed[1]) and torch.equal(gates[2], gates[1])
        assert same != own, index
    (video, image, motion, guidance), text, t = _inputs(cfg)
    v, m = model(video, image, text, t, motion, guidance)
    assert v.shape == video.shape and m.shape == motion.shape


def test_svimo_5b_with_only_even_layers_has_half_the_motion_modulation():
    counts = {}
    for mode in ("all", "even"):
        cfg = load_config(flavour="svimo-5b", overrides=["--model.motion_modulation", mode])
        with torch.device("meta"):
            model = SViMo(cfg)
        counts[mode] = sum(p.numel() for p in model.parameters())
    per_block = 2 * (512 * 9216 + 9216)  # norm1 and norm2's motion_linear
    assert counts["all"] - counts["even"] == 21 * per_block  # 198.6 M of 6.02 B


def test_learned_positions_resample_to_another_resolution():
    """A training stage at another size: the table is resampled to that token grid; at the
    config's own size it is used as is."""
    cfg = load_config(overrides=["--model.learned_positional_embedding", "true"])
    model = _randomised(cfg)
    torch.manual_seed(0)
    model.pos_embedding.normal_()
    (video, image, motion, guidance), text, t = _inputs(cfg)
    small = [x[..., :2, :4] for x in (video, image)] + [text, t] + [
        x[..., :2, :4] for x in (motion, guidance)]
    out_v, out_m = model(*small)
    assert out_v.shape == small[0].shape and out_m.shape == small[4].shape
    # the resampled table reaches the output
    with torch.no_grad():
        model.pos_embedding.zero_()
    assert not torch.allclose(out_v, model(*small)[0])
    with pytest.raises(ValueError, match="text positions"):
        model(video, image, text[:, :3], t, motion, guidance)


def test_positions_are_built_once_per_token_grid(monkeypatch):
    """RoPE and the resampled positional table are constants of a token grid: a training
    step at the same size reuses them (no rebuilding, no host work per forward); another
    grid builds its own."""
    import hoi.model.svimo as svimo_module

    calls = {"rope": 0, "resample": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(svimo_module, "get_3d_rotary_pos_embed",
                        counted("rope", svimo_module.get_3d_rotary_pos_embed))
    monkeypatch.setattr(svimo_module, "resample_grid",
                        counted("resample", svimo_module.resample_grid))
    cfg = load_config(overrides=["--model.learned_positional_embedding", "true"])
    model = _randomised(cfg)
    (video, image, motion, guidance), text, t = _inputs(cfg)
    small = [x[..., :2, :4] for x in (video, image)] + [text, t] + [
        x[..., :2, :4] for x in (motion, guidance)]
    first = model(*small)
    assert calls == {"rope": 1, "resample": 1}
    second = model(*small)
    assert calls == {"rope": 1, "resample": 1}
    assert torch.equal(first[0], second[0])
    model(video, image, text, t, motion, guidance)  # the model's own grid: no resampling
    assert calls == {"rope": 2, "resample": 1}
