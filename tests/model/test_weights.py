"""SViMo from a CogVideoX checkpoint: the video path reproduces diffusers' transformer."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import (
    get_resize_crop_region_for_grid,
)

from hoi.config import ConfigError, load_config
from hoi.model.svimo import SViMo
from hoi.model.weights import load_cogvideox
from tests.model.foundation import TINY_I2V, write_foundation


@pytest.fixture(scope="module")
def foundation(tmp_path_factory) -> tuple[str, CogVideoXTransformer3DModel]:
    path = tmp_path_factory.mktemp("cogvideox") / "transformer"
    return str(path), write_foundation(path)


def _diffusers_rope(model: CogVideoXTransformer3DModel, frames: int, rows: int, cols: int):
    """What CogVideoX's I2V pipeline passes as image_rotary_emb."""
    c = model.config
    crops = get_resize_crop_region_for_grid((rows, cols), c.sample_width // c.patch_size,
                                            c.sample_height // c.patch_size)
    return get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops,
                                   grid_size=(rows, cols), temporal_size=frames)


def test_video_path_equals_diffusers(foundation):
    path, reference = foundation
    cfg = load_config(flavour="svimo-tiny", overrides=TINY_I2V)
    model = load_cogvideox(path, cfg)
    F, h, w = cfg.latent_shape
    g = torch.Generator().manual_seed(1)
    video, image = (torch.randn(2, F, 16, h, w, generator=g) for _ in range(2))
    text = torch.randn(2, 8, 32, generator=g)
    t = torch.tensor([17, 901])
    with torch.no_grad():
        ours, motion = model(video, image, text, t)
        theirs = reference(hidden_states=torch.cat([video, image], dim=2),
                           encoder_hidden_states=text, timestep=t,
                           image_rotary_emb=_diffusers_rope(reference, F, h // 2, w // 2),
                           return_dict=False)[0]
    assert motion is None
    assert theirs.abs().mean() > 0.1  # a non-trivial output to agree on
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modulation", ["all", "even"])
def test_motion_stream_starts_as_video_twin(foundation, modulation):
    """Same latent into both streams -> same prediction from both heads (at initialisation
    the motion stream is a copy of the video stream), with the motion stream's own
    modulation in every block or in the even ones only."""
    path, _ = foundation
    cfg = load_config(flavour="svimo-tiny",
                      overrides=[*TINY_I2V, "--model.motion_modulation", modulation])
    model = load_cogvideox(path, cfg)
    F, h, w = cfg.latent_shape
    x, cond = torch.randn(1, F, 16, h, w), torch.randn(1, F, 16, h, w)
    with torch.no_grad():
        video, motion = model(x, cond, torch.randn(1, 8, 32), torch.tensor([500]), x, cond)
    torch.testing.assert_close(motion, video, rtol=1e-5, atol=1e-5)
    block = model.transformer_blocks[0].norm2
    assert not block.motion_linear.weight.data_ptr() == block.linear.weight.data_ptr()


def test_other_resolution_resamples_positions(foundation):
    path, _ = foundation
    cfg = load_config(flavour="svimo-tiny", overrides=[*TINY_I2V, "--data.height", "48",
                                                       "--data.width", "64"])
    model = load_cogvideox(path, cfg)
    F, h, w = cfg.latent_shape  # 3 x 6 x 8 latents: 3 x 3 x 4 tokens
    assert model.pos_embedding.shape == (1, 8 + 3 * 3 * 4, 32)
    with torch.no_grad():
        out, _ = model(torch.randn(1, F, 16, h, w), torch.randn(1, F, 16, h, w),
                       torch.randn(1, 8, 32), torch.tensor([5]))
    assert out.shape == (1, F, 16, h, w) and torch.isfinite(out).all()


def test_incompatible_checkpoint_is_refused(foundation):
    path, _ = foundation
    cfg = load_config(flavour="svimo-tiny", overrides=["--model.num_layers", "3",
                                                       "--data.height", "48"])
    with pytest.raises(ConfigError) as e:
        load_cogvideox(path, cfg)
    message = str(e.value)
    assert "num_layers: checkpoint 2, config 3" in message
    assert "use_learned_positional_embeddings" in message and "rope_base_grid" in message


def test_loads_from_s3(foundation, s3):
    path, _ = foundation
    root = s3.fresh_root()
    from pathlib import Path

    from hoi.storage import join, write_bytes
    for f in Path(path).iterdir():
        write_bytes(join(root, "transformer", f.name), f.read_bytes(), s3.storage)
    cfg = load_config(flavour="svimo-tiny", overrides=TINY_I2V)
    model = load_cogvideox(root, cfg, s3.storage)   # the pipeline root with transformer/
    local = load_cogvideox(path, cfg)
    for (name, a), b in zip(model.state_dict().items(), local.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_save_and_load_our_checkpoint(tmp_path):
    cfg = load_config(flavour="svimo-tiny", overrides=TINY_I2V)
    torch.manual_seed(3)
    model = SViMo(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    model.save_pretrained(str(tmp_path / "svimo"))
    loaded = SViMo.from_pretrained(str(tmp_path / "svimo"))
    assert loaded.config == cfg and not loaded.training
    F, h, w = cfg.latent_shape
    x = torch.randn(1, F, 16, h, w)
    with torch.no_grad():
        a = model.eval()(x, x, torch.ones(1, 8, 32), torch.tensor([9]), x, x)
        b = loaded(x, x, torch.ones(1, 8, 32), torch.tensor([9]), x, x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SViMo.from_pretrained(str(tmp_path / "nothing"))
